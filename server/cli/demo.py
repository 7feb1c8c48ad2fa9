"""`ganpaint demo`: one edit on the default model, from nothing on disk.

The "photo" is a portrait drawn by the generator (sample 8 of the gallery's seeded samples:
a man with glasses and light brown hair) enlarged to 256 px; the selection is an ellipse over
the hair on top of his head (not the background above it: the edit fills every selected
cell, so a selection reaching into the sky draws a dark cap); the edit is the built-in
concept "dark hair", added at the strongest brush, through the whole pipeline (invert,
edit, fit G′, composite). The output shows
before | after | where pixels changed. Why this one: of the default model's concepts it is
the edit that a newcomer recognises at a glance (docs/concepts/digiface-dcgan64.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ganpaint.core.adapt import DEFAULT_STEPS, AdaptConfig
from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.concepts.regions import ellipse_mask
from ganpaint.core.generators import load_model
from ganpaint.core.imageio import write_image
from ganpaint.core.photo import resize
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo
from ganpaint.core.progress import ProgressFn

SIZE = 256
CONCEPT, OP, STRENGTH = "dark hair", "add", "high"
HAIR_ON_HEAD = (-0.06, 0.30, 0.20, 0.96)  # this sample's hair, as a photographer would select
SAMPLES, SEED, SAMPLE = 96, 0, 8  # the gallery's samples (scripts/make_starter_concepts.py)


def demo_photo(gen, sample: int = SAMPLE) -> np.ndarray:
    """A generated portrait, [SIZE, SIZE, 3] uint8."""
    with torch.no_grad():
        z = gen.sample_latent(SAMPLES, torch.Generator().manual_seed(SEED))[sample : sample + 1]
        img = gen(z)
    img = resize(img.cpu(), SIZE)[0].permute(1, 2, 0)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def demo_mask() -> np.ndarray:
    """An ellipse over the hair on top of the head, [SIZE, SIZE] uint8."""
    return ellipse_mask(HAIR_ON_HEAD, SIZE)


def run_demo(
    output: Path,
    steps: int = DEFAULT_STEPS,
    progress: ProgressFn | None = None,
    cfg: PipelineConfig | None = None,
) -> dict:
    """Write the before | after | changed picture; cfg (default: the method's settings with
    ``steps`` G′ steps) lets tests run it small."""
    t0 = time.perf_counter()
    gen = load_model()
    photo, mask = demo_photo(gen), demo_mask()
    concept = ConceptLibrary(gen.model_id, generator=gen).get(CONCEPT)
    units, values = concept.top(STRENGTH)
    cfg = cfg or PipelineConfig(adapt=AdaptConfig(steps=steps))
    result = edit_photo(gen, photo, mask, EditSpec(units, OP, values), cfg, progress)
    changed = np.abs(result.image.astype(int) - photo.astype(int)).max(axis=2) > 0
    diff = np.where(changed[..., None], np.array([255, 64, 64], np.uint8), photo // 3)
    write_image(output, np.concatenate([photo, result.image, diff.astype(np.uint8)], axis=1))
    inside = mask > 0
    delta = np.abs(result.image.astype(float) - photo.astype(float)).mean(axis=2)
    return {
        "output": str(output),
        "edit": f"{OP} {CONCEPT} ({STRENGTH}: {len(units)} units)",
        "seconds": round(time.perf_counter() - t0, 2),
        "psnr_keep": round(result.psnr_keep, 2),
        "units": units,
        "changed_pixels": int(changed.sum()),
        "selected_pixels": int(inside.sum()),
        "mean_abs_change_inside": round(float(delta[inside].mean()), 1),
    }
