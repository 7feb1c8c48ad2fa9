"""GAN Dissection with a segmenter the user has: rank units by IoU with each label.

Procedure (Bau et al., ICLR 2019, §3.1): for each unit u, t_u = the top-0.005 quantile of
its activations over random samples and positions (the 0.995 quantile); for each sample,
upsample the unit's map bilinearly to the label map's size and threshold it at t_u; IoU of
that mask with each label's mask, accumulated over all samples:
IoU(u, c) = Σ|U ∩ L_c| / Σ|U ∪ L_c|. A label's concept is its units ranked by IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..edit import unit_quantiles
from ..progress import CancelFn, ProgressFn, Reporter
from .rank import iou_counts, iou_from_counts, label_masks, ranked, threshold_maps
from .record import Concept, now_iso

TOP_QUANTILE = 0.005  # GAN Dissection's threshold: the top 0.5 % of each unit's activations


@runtime_checkable
class Segmenter(Protocol):
    """Anything that labels images: ``labels`` names label indices 0..L−1."""

    labels: Sequence[str]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, R, R] in [-1, 1] → label maps [B, H, W] or [B, K, H, W] (K labels per
        pixel) of integers in 0..L−1, negative where a pixel has no label."""
        ...


@dataclass
class Dissection:
    layer: str
    labels: list[str]
    iou: torch.Tensor  # [C, L]
    thresholds: torch.Tensor  # [C]
    label_area: torch.Tensor  # [L] pixels over all samples
    n_samples: int

    def ranking(self, label: str | int, k: int | None = 15, min_iou: float = 0.0) -> list[int]:
        """Units ranked by IoU with a label, best first (IoU > min_iou)."""
        j = self.labels.index(label) if isinstance(label, str) else int(label)
        return ranked(self.iou[:, j].float(), k, min_iou)

    def concepts(
        self,
        model_id: str,
        on_values: torch.Tensor | None = None,
        k: int = 15,
        min_iou: float = 0.0,
        skip: Sequence[str] = (),
    ) -> list[Concept]:
        """One concept per label that some unit matches (named after the label)."""
        out, created = [], now_iso()
        for j, label in enumerate(self.labels):
            units = self.ranking(j, k, min_iou)
            if not units or label in skip:
                continue
            out.append(
                Concept(
                    name=label,
                    model=model_id,
                    layer=self.layer,
                    units=units,
                    values=None if on_values is None else [float(on_values[u]) for u in units],
                    source="dissected",
                    created=created,
                    description=f"GAN Dissection IoU over {self.n_samples} samples",
                    scores=[float(self.iou[u, j]) for u in units],
                )
            )
        return out


@torch.no_grad()
def dissect(
    gen,
    segmenter: Segmenter,
    n_samples: int = 1000,
    layer: str | int | None = None,
    quantile: float = TOP_QUANTILE,
    batch: int = 8,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Dissection:
    """IoU of every unit at ``layer`` (default the edit layer) with every label."""
    k = gen.index(gen.edit_layer if layer is None else layer)
    name = gen.infos[k].name
    labels = list(segmenter.labels)
    # Pass 1: thresholds from the activations alone (cheap: runs G up to the layer).
    thresholds = unit_quantiles(gen, k, n_samples, 1 - quantile, seed=seed, batch=batch)
    # Pass 2: the same samples again (same seed), full images, segmented.
    rng = torch.Generator().manual_seed(seed)
    steps = (n_samples + batch - 1) // batch
    rep = Reporter("dissect", steps, progress, cancel, every=1)
    inter = ua = la = None
    for i, start in enumerate(range(0, n_samples, batch)):
        z = gen.sample_latent(min(batch, n_samples - start), rng)
        acts = gen.run(z, 0, k + 1)
        images = gen.bind(z).run(acts, k + 1)
        lm = torch.as_tensor(segmenter.segment(images)).to(acts.device)
        for j in range(acts.shape[0]):  # one image at a time: 512 units × 256² is 128 MB
            lmasks = label_masks(lm[j : j + 1], len(labels))
            size = tuple(lmasks.shape[-2:])
            cells = gen.image_cells(acts[j : j + 1], k)  # the label maps cover the image
            counts = iou_counts(threshold_maps(cells, thresholds, size), lmasks)
            if inter is None:
                inter, ua, la = counts
            else:
                inter, ua, la = inter + counts[0], ua + counts[1], la + counts[2]
        rep.step(i)
    assert inter is not None and ua is not None and la is not None
    return Dissection(name, labels, iou_from_counts(inter, ua, la), thresholds, la, n_samples)
