"""Selections of every shape through the whole pipeline: wide and tall, small and large, both
models, fast and faithful, first and later edits of a session (the cache is what the server
keeps per session). Wide areas once crashed the fast path in region.run_window."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from samples import make_photo

from ganpaint.core.adapt import AdaptConfig
from ganpaint.core.fast import FastConfig
from ganpaint.core.generators.base import freeze
from ganpaint.core.generators.progan import ProGAN256
from ganpaint.core.invert import InvertConfig
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo

# (area width, height, ellipse width, height): the plug-in sends selection plus context.
SHAPES = [
    (114, 82, 50, 18),  # the reported crash: an eye
    (160, 106, 80, 30),
    (200, 140, 100, 36),
    (240, 140, 120, 40),
    (82, 114, 18, 50),  # tall
    (300, 60, 260, 24),  # very wide
    (40, 30, 12, 8),  # smaller than the model
    (640, 200, 400, 60),  # larger than the model, wide
]


def ellipse_mask(h: int, w: int, eh: int, ew: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - (h - 1) / 2) / (eh / 2)) ** 2 + ((xx - (w - 1) / 2) / (ew / 2)) ** 2 <= 1
    return inside.astype(np.uint8) * 255


def tiny(quality: str, **fast) -> PipelineConfig:
    return PipelineConfig(
        invert=InvertConfig(starts=1, z_steps=2, r_steps=3),
        adapt=AdaptConfig(steps=4, width=8),
        quantile_samples=16,
        quality=quality,
        fast=FastConfig(max_steps=4, base_steps=4, check_every=2, **fast),
    )


def check(res, photo: np.ndarray, mask: np.ndarray) -> None:
    assert res.image.shape == photo.shape and res.image.dtype == photo.dtype
    assert np.array_equal(res.image[mask == 0], photo[mask == 0])
    # A change too small to move a pixel gives the photo back (psnr_inside inf); never NaN.
    assert res.metrics and not any(
        math.isnan(res.metrics[k]) for k in ("psnr_inside", "detail_ratio")
    )


CASES = [("fast", s) for s in SHAPES] + [("faithful", SHAPES[i]) for i in (0, 4, 5, 7)]


@pytest.mark.parametrize(("quality", "shape"), CASES)
def test_any_selection_shape_first_and_later_edits(dcgan, quality, shape):
    w, h, ew, eh = shape
    photo = make_photo(h, w, seed=w)
    mask = ellipse_mask(h, w, eh, ew)
    cfg = tiny(quality)
    cache: dict = {}
    first = edit_photo(dcgan, photo, mask, EditSpec([3, 17, 42], "add"), cfg, cache=cache)
    later = edit_photo(dcgan, photo, mask, EditSpec([5, 9], "remove"), cfg, cache=cache)
    assert not first.session_reused and later.session_reused
    once = edit_photo(dcgan, photo, mask, EditSpec([3, 17, 42], "add"), cfg)
    for res in (first, later, once):
        check(res, photo, mask)


def test_wide_selections_on_progan():
    torch.manual_seed(0)
    gen = freeze(ProGAN256())
    photo = make_photo(82, 114)
    mask = ellipse_mask(82, 114, 18, 50)
    cache: dict = {}
    cfg = dataclasses.replace(tiny("fast"), quantile_samples=2)
    spec = EditSpec([1, 2], "remove")
    # First edit (base fit made), later edit (from the base fit): the path that crashed.
    # Faithful wide selections go through the same composite (the DCGAN cases above).
    for _ in range(2):
        check(edit_photo(gen, photo, mask, spec, cfg, cache=cache), photo, mask)
