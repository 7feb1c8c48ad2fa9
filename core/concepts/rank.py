"""Pure ranking functions on tensors: learn-from-selection scores, dissection IoU, k-means.

Nothing here runs a generator; learn.py, dissect.py and discover.py feed these with real
activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# -- learn from a selection ------------------------------------------------------------------
def selection_scores(
    acts: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor | None = None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much more each unit fires inside the selection than outside: (scores, inside) [C].

    acts: [B, C, h, w] activations at the layer; mask: [B, 1, H, W] in [0, 1] (any
    resolution; area-pooled to h×w so a cell half covered counts half inside, half outside);
    scale: [C] each unit's typical "on" level (the 0.99 quantile over random samples).

    score_u = (mean_in(u) − mean_out(u)) / scale_u — the difference of means in units of
    the unit's own "on" level. Why this statistic: from one example on an 8×8 layer,
    (1) GAN Dissection's IoU of a top-0.5 %-quantile threshold is mostly empty maps and ties
    at 0, so it cannot rank; (2) a standardised mean difference divides by the spread
    *within this image*, estimated from a handful of cells, so units that happen to be flat
    here get huge scores from tiny differences; (3) the unit's "on" level is stable (many
    samples), makes units of different magnitudes comparable, and is the very value the brush
    writes, so a score of 1 means "inside, it is on; outside, it is off". Without ``scale``
    the unit's spread over the example is used instead. Units whose scale is ≤ eps (dead)
    score 0.

    inside: each unit's mask-weighted mean activation inside the selection — the "typical
    inside value" a learned concept paints with.
    """
    if acts.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError("acts must be [B, C, h, w] and mask [B, 1, H, W]")
    if mask.shape[0] != acts.shape[0]:
        raise ValueError("one mask per example")
    acts = acts.detach().float()
    w_in = F.adaptive_avg_pool2d(mask.detach().float().to(acts.device), acts.shape[-2:])
    w_in = w_in.clamp(0, 1)
    w_out = 1 - w_in
    n_in, n_out = w_in.sum(), w_out.sum()
    if n_in <= eps:
        raise ValueError("the selection is empty at the layer's resolution")
    if n_out <= eps:
        raise ValueError("the selection covers everything: nothing to compare it with")
    inside = (acts * w_in).sum(dim=(0, 2, 3)) / n_in
    outside = (acts * w_out).sum(dim=(0, 2, 3)) / n_out
    if scale is None:
        scale = acts.transpose(0, 1).reshape(acts.shape[1], -1).std(dim=1)
    scale = scale.detach().float().to(acts.device)
    alive = scale > eps
    scores = torch.where(alive, (inside - outside) / scale.clamp_min(eps), torch.zeros_like(inside))
    return scores.cpu(), inside.cpu()


def contrast_scores(
    acts: torch.Tensor,
    mask: torch.Tensor,
    positive: torch.Tensor,
    scale: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much more each unit fires in a region on examples that show a thing than on
    examples that do not: (scores, inside) [C].

    acts: [B, C, h, w]; mask: [1 or B, 1, H, W] in [0, 1], the region (area-pooled to h×w);
    positive: [B] bool, the examples that show the thing there; scale: [C] "on" levels.
    score_u = (mean over positives − mean over the others of u's mean in the region) /
    scale_u. Why not inside-vs-outside (selection_scores): on aligned faces most units fire
    by *position* (every face has eyes at the same place), so inside-vs-outside finds "the
    eye region", not "glasses"; the same region on faces without the thing cancels that.
    inside: [C] the positives' mean activation in the region.
    """
    if acts.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError("acts must be [B, C, h, w] and mask [B, 1, H, W]")
    positive = positive.to(torch.bool).cpu()
    if positive.shape != (acts.shape[0],):
        raise ValueError("one positive/negative flag per example")
    if not positive.any() or positive.all():
        raise ValueError("need examples with and without the thing")
    acts = acts.detach().float().cpu()
    w = F.adaptive_avg_pool2d(mask.detach().float().cpu(), acts.shape[-2:]).clamp(0, 1)
    w = w.expand(acts.shape[0], -1, -1, -1)
    n = w.sum(dim=(2, 3))  # [B, 1]
    if (n <= eps).any():
        raise ValueError("the region is empty at the layer's resolution")
    region = (acts * w).sum(dim=(2, 3)) / n  # [B, C]
    inside = region[positive].mean(dim=0)
    diff = inside - region[~positive].mean(dim=0)
    scale = scale.detach().float().cpu()
    alive = scale > eps
    scores = torch.where(alive, diff / scale.clamp_min(eps), torch.zeros_like(diff))
    return scores, inside


def presence_probe(
    acts: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor, quantile: float = 0.9
) -> tuple[torch.Tensor, float]:
    """A linear probe of a thing at the layer: (direction [C] of norm 1, threshold).

    acts: [B, C, h, w]; mask: [1 or B, 1, H, W], the region (a cell counts when the region
    covers any of it); positive: [B] bool. direction = mean activation vector of the
    positives' region cells minus the negatives', normalised; threshold = the ``quantile``
    of ⟨cell, direction⟩ over the negatives' region cells. Why all units and not the
    concept's top ones: the default model's top units fire almost as much on faces without
    the thing (a remove by them changes negatives 0.5–0.6× as much as positives); their
    combination with the rest tells the two apart far better (docs/performance.md).
    """
    positive = positive.to(torch.bool).cpu()
    if positive.shape != (acts.shape[0],) or not positive.any() or positive.all():
        raise ValueError("need one flag per example, with examples with and without the thing")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), not {quantile}")
    acts = acts.detach().float().cpu()
    cells = F.adaptive_max_pool2d(mask.detach().float().cpu(), acts.shape[-2:]) > 0
    cells = cells.expand(acts.shape[0], -1, -1, -1)[:, 0]  # [B, h, w]
    if not cells.any():
        raise ValueError("the region is empty at the layer's resolution")
    vecs = acts.permute(0, 2, 3, 1)  # [B, h, w, C]
    pos, neg = vecs[cells & positive[:, None, None]], vecs[cells & ~positive[:, None, None]]
    diff = pos.mean(0) - neg.mean(0)
    norm = diff.norm()
    if not norm > 0:
        raise ValueError("the examples with and without the thing look the same here")
    direction = diff / norm
    return direction, float(torch.quantile(neg @ direction, quantile))


def ranked(scores: torch.Tensor, k: int | None = None, min_score: float = 0.0) -> list[int]:
    """Indices of the k best scores above min_score, best first (stable for ties)."""
    order = torch.argsort(-scores, stable=True)
    keep = [int(i) for i in order if scores[i] > min_score]
    return keep if k is None else keep[:k]


# -- GAN Dissection ---------------------------------------------------------------------------
def threshold_maps(
    acts: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Units' binary masks: acts [B, C, h, w] bilinearly upsampled to ``size``, > threshold."""
    up = F.interpolate(acts.float(), size=size, mode="bilinear", align_corners=False)
    return up > thresholds.to(up).view(1, -1, 1, 1)


def label_masks(labelmaps: torch.Tensor, n_labels: int) -> torch.Tensor:
    """[B, H, W] or [B, K, H, W] integer label maps (negative = no label) → [B, L, H, W] bool.

    K > 1 maps give several labels per pixel (e.g. object and material)."""
    if labelmaps.dim() == 3:
        labelmaps = labelmaps[:, None]
    if labelmaps.dim() != 4:
        raise ValueError("label maps must be [B, H, W] or [B, K, H, W]")
    lm = labelmaps.long()
    if (lm >= n_labels).any():
        raise ValueError(f"label index out of range 0..{n_labels - 1}")
    return torch.stack([(lm == label).any(dim=1) for label in range(n_labels)], dim=1)


def iou_counts(
    unit_masks: torch.Tensor, lab_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(intersection [C, L], unit area [C], label area [L]) in pixels, summed over the batch.

    unit_masks: [B, C, H, W] bool; lab_masks: [B, L, H, W] bool, same H, W.
    """
    if unit_masks.shape[0] != lab_masks.shape[0] or unit_masks.shape[-2:] != lab_masks.shape[-2:]:
        raise ValueError("unit and label masks must match in batch and size")
    C, L = unit_masks.shape[1], lab_masks.shape[1]
    inter = torch.zeros(C, L, dtype=torch.float64)
    for u, lab in zip(unit_masks, lab_masks, strict=True):  # one image at a time: memory
        uf = u.reshape(C, -1).float()
        lf = lab.reshape(L, -1).float()
        inter += (uf @ lf.T).double().cpu()
    ua = unit_masks.sum(dim=(0, 2, 3)).double().cpu()
    la = lab_masks.sum(dim=(0, 2, 3)).double().cpu()
    return inter, ua, la


def iou_from_counts(inter: torch.Tensor, ua: torch.Tensor, la: torch.Tensor) -> torch.Tensor:
    """IoU [C, L] = Σ|U∩L| / Σ|U∪L| over the whole sample set (0 where the union is empty)."""
    union = ua[:, None] + la[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


# -- clustering --------------------------------------------------------------------------------
def unit_profiles(acts: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's activations over samples and positions, centred and scaled to norm 1.

    acts: [N, C, h, w] → (X [C, N·h·w], alive [C] bool). The dot product of two rows is the
    Pearson correlation of where the two units fire. Dead (constant) units give zero rows.
    """
    C = acts.shape[1]
    x = acts.detach().float().transpose(0, 1).reshape(C, -1)
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    alive = norm[:, 0] > eps * max(1.0, float(norm.max()))
    return torch.where(alive[:, None], x / norm.clamp_min(eps), torch.zeros_like(x)), alive


def spherical_kmeans(
    x: torch.Tensor, k: int, seed: int = 0, iters: int = 100, restarts: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on unit-norm rows with cosine similarity (k-means++ seeding, best of restarts).

    x: [n, D] rows of norm 1. Returns (labels [n] in 0..k−1, centroids [k, D] of norm 1).
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(restarts):
        cent = _kmeanspp(x, k, gen)
        labels = torch.full((n,), -1, dtype=torch.long)
        for _ in range(iters):
            sims = x @ cent.T  # [n, k]
            new = sims.argmax(dim=1)
            if torch.equal(new, labels):
                break
            labels = new
            cent = torch.zeros_like(cent).index_add_(0, labels, x)
            norms = cent.norm(dim=1)
            for j in torch.nonzero(norms <= 1e-12).flatten().tolist():  # empty: re-seed
                far = int((x @ cent.T).max(dim=1).values.argmin())
                cent[j] = x[far]
                labels[far] = j
                norms[j] = 1.0
            cent = cent / cent.norm(dim=1, keepdim=True).clamp_min(1e-12)
        score = float((x @ cent.T).max(dim=1).values.sum())
        if best is None or score > best[0] + 1e-9:
            best = (score, labels.clone(), cent.clone())
    assert best is not None
    return best[1], best[2]


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    cent = [x[first]]
    dist = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        p = dist / dist.sum() if dist.sum() > 0 else torch.full((n,), 1.0 / n)
        i = int(torch.multinomial(p, 1, generator=gen))
        cent.append(x[i])
        dist = torch.minimum(dist, (1 - x @ x[i]).clamp_min(0))
    return torch.stack(cent)
