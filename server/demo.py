"""`ganpaint demo`: one edit on the default model, from nothing on disk.

The "photo" is a portrait drawn by the generator at a fixed seed and enlarged to 256 px;
the selection is the upper-left part of the head; the edit removes the units that fire most
there. The output shows before | after | where pixels changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ganpaint.core.adapt import AdaptConfig
from ganpaint.core.edit import pool_mask
from ganpaint.core.generators import load_model
from ganpaint.core.imageio import write_image
from ganpaint.core.photo import resize
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo, prepare
from ganpaint.core.progress import ProgressFn

SIZE = 256


def demo_photo(gen, seed: int = 3) -> np.ndarray:
    """A generated portrait, [SIZE, SIZE, 3] uint8."""
    with torch.no_grad():
        img = gen(gen.sample_latent(1, torch.Generator().manual_seed(seed)))
    img = resize(img.cpu(), SIZE)[0].permute(1, 2, 0)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def demo_mask() -> np.ndarray:
    """An ellipse over the upper-left of the head, [SIZE, SIZE] uint8."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    inside = ((xx - 0.38 * SIZE) / (0.16 * SIZE)) ** 2 + (
        (yy - 0.22 * SIZE) / (0.12 * SIZE)
    ) ** 2 <= 1
    return (inside * 255).astype(np.uint8)


def run_demo(output: Path, steps: int = 1000, progress: ProgressFn | None = None) -> dict:
    t0 = time.perf_counter()
    gen = load_model()
    photo, mask = demo_photo(gen), demo_mask()
    cfg = PipelineConfig(adapt=AdaptConfig(steps=steps))
    cache: dict = {}  # the inversion made to pick units is reused by the edit
    units = _busiest_units(gen, photo, mask, cfg, cache, progress)
    result = edit_photo(gen, photo, mask, EditSpec(units, "remove"), cfg, progress, cache=cache)
    changed = np.abs(result.image.astype(int) - photo.astype(int)).max(axis=2) > 0
    diff = np.where(changed[..., None], np.array([255, 64, 64], np.uint8), photo // 3)
    write_image(output, np.concatenate([photo, result.image, diff.astype(np.uint8)], axis=1))
    return {
        "output": str(output),
        "seconds": round(time.perf_counter() - t0, 2),
        "psnr_keep": round(result.psnr_keep, 2),
        "units": units,
        "changed_pixels": int(changed.sum()),
        "selected_pixels": int((mask > 0).sum()),
    }


def _busiest_units(
    gen,
    photo: np.ndarray,
    mask: np.ndarray,
    cfg: PipelineConfig,
    cache: dict,
    progress: ProgressFn | None,
    k: int = 10,
) -> list[int]:
    """The k edit-layer units most active inside the selection (in the inverted photo)."""
    prep = prepare(gen, photo, mask, cfg, progress, cache=cache)
    r = prep.session.inversion.r
    m = pool_mask(prep.mask, r.shape[-1])
    inside = (r * m).sum(dim=(0, 2, 3)) / m.sum().clamp_min(1)
    return inside.topk(k).indices.tolist()
