"""Discover concepts without labels: group the edit layer's units by where they fire.

Over N random samples every unit has an activation map; centred and scaled to norm 1, the
dot product of two units' maps is the Pearson correlation of where they fire. Spherical
k-means on those vectors (rank.spherical_kmeans) groups units that switch on in the same
places; each group becomes an unnamed concept ("group-01", …) whose units are ranked by
correlation with the group's centroid, with the units' 0.99 quantiles as values.

``contact_sheet`` draws one row per group so a person can name them: the samples where the
group fires most with its activation outlined, then what adding the group's units (10) in
the middle of a sample and removing them from the strongest sample does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..edit import apply_edit
from ..progress import CancelFn, ProgressFn, Reporter
from .quantiles import on_values as cached_on_values
from .rank import spherical_kmeans, unit_profiles
from .record import Concept, now_iso

DEFAULT_GROUPS = 12
DEFAULT_SAMPLES = 512


@dataclass
class Discovery:
    layer: str
    groups: list[list[int]]  # units ranked by closeness to the group's centroid
    closeness: list[list[float]]  # their correlation with the centroid
    on_values: torch.Tensor  # [C] 0.99 quantiles
    n_samples: int
    seed: int
    names: list[str] = field(default_factory=list)

    def concepts(self, model_id: str, created: str | None = None) -> list[Concept]:
        created = created or now_iso()
        names = self.names or [f"group-{i + 1:02d}" for i in range(len(self.groups))]
        return [
            Concept(
                name=name,
                model=model_id,
                layer=self.layer,
                units=units,
                values=[_r(self.on_values[u]) for u in units],
                source="discovered",
                created=created,
                description=(
                    f"units that fire together (k-means on activation correlation, "
                    f"{self.n_samples} samples, seed {self.seed})"
                ),
                scores=[_r(c) for c in close],
            )
            for name, units, close in zip(names, self.groups, self.closeness, strict=True)
        ]


def _r(v) -> float:
    return float(f"{float(v):.6g}")


@torch.no_grad()
def sample_activations(
    gen,
    n_samples: int,
    layer: int,
    seed: int = 0,
    batch: int = 32,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """[N, C, h, w] activations at a layer for N seeded random samples (float32, CPU)."""
    rng = torch.Generator().manual_seed(seed)
    steps = (n_samples + batch - 1) // batch
    rep = Reporter("sample", steps, progress, cancel, every=1)
    out = []
    for i, start in enumerate(range(0, n_samples, batch)):
        z = gen.sample_latent(min(batch, n_samples - start), rng)
        out.append(gen.run(z, 0, layer + 1).float().cpu())
        rep.step(i)
    return torch.cat(out)


def group_units(
    acts: torch.Tensor, k: int, seed: int = 0, restarts: int = 8
) -> tuple[list[list[int]], list[list[float]]]:
    """Cluster units by the correlation of their maps: (groups, closeness), largest first.

    Dead units (constant over all samples) are left out.
    """
    x, alive = unit_profiles(acts)
    idx = torch.nonzero(alive).flatten()
    k = min(k, len(idx))
    labels, cent = spherical_kmeans(x[idx], k, seed=seed, restarts=restarts)
    sims = (x[idx] * cent[labels]).sum(dim=1)
    groups, close = [], []
    for j in range(k):
        members = torch.nonzero(labels == j).flatten()
        if len(members) == 0:
            continue
        order = torch.argsort(-sims[members], stable=True)
        groups.append([int(idx[members[o]]) for o in order])
        close.append([float(sims[members[o]]) for o in order])
    # Largest groups first; ties by their best unit, so the order is deterministic.
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), groups[g][0]))
    return [groups[g] for g in order], [close[g] for g in order]


def discover(
    gen,
    groups: int = DEFAULT_GROUPS,
    n_samples: int = DEFAULT_SAMPLES,
    layer: str | int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    acts: torch.Tensor | None = None,
) -> Discovery:
    """Group the units of ``layer`` (default the edit layer) into ``groups`` concepts, by
    where they fire in the image (``gen.image_cells``: a StyleGAN3 map's margin is left out).
    acts: [N, C, h, w] the layer's whole maps (``sample_activations``), if already sampled."""
    k = gen.index(gen.edit_layer if layer is None else layer)
    if acts is None:
        acts = sample_activations(gen, n_samples, k, seed, progress=progress, cancel=cancel)
    grouped, close = group_units(gen.image_cells(acts, k), groups, seed)
    values = cached_on_values(gen, k)
    return Discovery(gen.infos[k].name, grouped, close, values, int(acts.shape[0]), seed)


# -- contact sheet -----------------------------------------------------------------------------
def _to_pil(img: torch.Tensor, size: int) -> Image.Image:
    """[3, R, R] in [-1, 1] → RGB image of size×size."""
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB").resize((size, size), Image.BICUBIC)


def _overlay(img: Image.Image, heat: np.ndarray, level: float) -> Image.Image:
    """Darken where the group's map is below ``level`` and outline the region in yellow."""
    on = heat > level
    arr = np.asarray(img).astype(np.float32)
    arr = np.where(on[..., None], arr, arr * 0.45)
    edge = on & ~(np.roll(on, 1, 0) & np.roll(on, -1, 0) & np.roll(on, 1, 1) & np.roll(on, -1, 1))
    arr[edge] = (255, 230, 0)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


@torch.no_grad()
def contact_sheet(
    gen,
    discovery: Discovery,
    path: Path,
    acts: torch.Tensor | None = None,
    per_row: int = 5,
    cell: int | None = None,
    edit_units: int = 10,
    n_samples: int = 128,
) -> Path:
    """One row per group: label, ``per_row`` top samples with the group outlined, then
    the sample where the group is weakest before and after "add" (the group's top units
    switched on in the middle half), and "remove" (switched off everywhere) on the first
    sample."""
    k = gen.index(discovery.layer)
    if acts is None:
        acts = sample_activations(gen, n_samples, k, discovery.seed)
    acts = acts[:n_samples]
    dev = next(gen.parameters()).device
    R = gen.resolution
    cell = cell or max(96, min(R, 160))
    label_w = 150
    rows = len(discovery.groups)
    cols = per_row + 3
    pad = 4
    sheet = Image.new(
        "RGB", (label_w + cols * (cell + pad) + pad, 20 + rows * (cell + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    titles = ["top samples"] + [""] * (per_row - 1) + ["weakest", "+ add", "- remove (1st)"]
    for c, title in enumerate(titles):
        draw.text((label_w + pad + c * (cell + pad), 4), title, fill="black")
    names = discovery.names or [f"group-{i + 1:02d}" for i in range(rows)]
    scale = discovery.on_values.clamp_min(1e-6)
    cells = gen.image_cells(acts, k)  # the outlines: where the group fires in the image
    h = cells.shape[-1]
    for g, units in enumerate(discovery.groups):
        top = units[: min(15, len(units))]
        gmap = (cells[:, top] / scale[top].view(1, -1, 1, 1)).mean(dim=1)  # [N, h, w]
        strength = gmap.flatten(1).amax(dim=1)
        order = torch.argsort(-strength, stable=True)
        level = float(torch.quantile(gmap.flatten(), 0.9))
        y = 20 + pad + g * (cell + pad)
        draw.text((pad, y + 4), names[g], fill="black")
        draw.text((pad, y + 20), f"{len(units)} units", fill="gray")
        draw.text((pad, y + 36), "top: " + " ".join(map(str, units[:5])), fill="gray")
        chosen = order[:per_row]
        imgs = gen.run(acts[chosen].to(dev), k + 1)
        for c, (i, img) in enumerate(zip(chosen.tolist(), imgs, strict=True)):
            heat = F.interpolate(
                gmap[i][None, None], size=(cell, cell), mode="bilinear", align_corners=False
            )[0, 0].numpy()
            tile = _overlay(_to_pil(img, cell), heat, level)
            sheet.paste(tile, (label_w + pad + c * (cell + pad), y))
        # add: the group's units on in the middle half of the weakest sample
        eu = units[:edit_units]
        weak = int(order[-1])
        m = torch.zeros(1, 1, h, h)
        m[..., h // 4 : h - h // 4, h // 4 : h - h // 4] = 1
        m = gen.layer_mask(m, k)  # the image's middle half, in the frame of the whole map
        r = acts[weak : weak + 1].to(dev)
        before = gen.run(r, k + 1)[0]
        added = gen.run(apply_edit(r, m.to(dev), eu, discovery.on_values[eu]), k + 1)[0]
        sheet.paste(_to_pil(before, cell), (label_w + pad + per_row * (cell + pad), y))
        sheet.paste(_to_pil(added, cell), (label_w + pad + (per_row + 1) * (cell + pad), y))
        strong = int(order[0])
        r = acts[strong : strong + 1].to(dev)
        removed = gen.run(
            apply_edit(r, torch.ones(1, 1, *r.shape[-2:], device=dev), eu, torch.zeros(len(eu))),
            k + 1,
        )[0]
        sheet.paste(_to_pil(removed, cell), (label_w + pad + (per_row + 2) * (cell + pad), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
