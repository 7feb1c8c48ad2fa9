"""Photo-resolution metrics (core/metrics.py): each one against a case worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from samples import make_mask

from ganpaint.core.blur import gaussian_blur
from ganpaint.core.metrics import (
    cielab,
    detail_ratio,
    edge_band,
    edge_gradient_ratio,
    photo_metrics,
    psnr_photo,
    seam_steps,
    structure_correlation,
)


def noisy(h=120, w=160, seed=0, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(seed)
    return np.round(np.clip(0.5 + rng.normal(0, 0.1, (h, w, 3)), 0, 1) * top).astype(dtype)


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    return np.round(gaussian_blur(t, sigma)[0].permute(1, 2, 0).numpy()).astype(img.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_psnr_photo_of_a_constant_offset(dtype):
    photo = noisy(dtype=dtype) // 2
    top = np.iinfo(dtype).max
    where = np.zeros(photo.shape[:2], bool)
    where[10:50, 20:90] = True
    out = photo.copy()
    out[where] += 4  # MSE 16 there, nothing elsewhere
    assert psnr_photo(out, photo, where) == pytest.approx(10 * math.log10(top**2 / 16))
    assert psnr_photo(photo, photo, where) == math.inf
    assert math.isnan(psnr_photo(out, photo, np.zeros_like(where)))


def test_detail_ratio_is_one_for_the_photo_below_one_blurred_above_one_noisier():
    photo = noisy()
    where = np.ones(photo.shape[:2], bool)
    assert detail_ratio(photo, photo, where) == 1.0
    assert detail_ratio(blurred(photo, 2.0), photo, where) < 0.1
    rng = np.random.default_rng(1)
    more = np.clip(photo + rng.normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    assert detail_ratio(more, photo, where) > 1.2


def test_edge_band_is_six_pixels_across_the_selections_edge():
    sel = make_mask(60, 60, (20, 20, 40, 40)) > 0
    band = edge_band(sel, 6)
    assert band[17:23, 30].all() and not band[16, 30] and not band[23, 30]  # 3 px each side
    assert not band[30, 30]  # deep inside


def test_edge_gradient_ratio_sees_a_seam():
    photo = noisy(seed=2)
    sel = make_mask(120, 160, (30, 40, 90, 120)) > 0
    assert edge_gradient_ratio(photo, photo, sel) == 1.0
    seam = photo.copy()
    seam[sel] = np.clip(seam[sel].astype(int) + 60, 0, 255).astype(np.uint8)  # a hard step
    assert edge_gradient_ratio(seam, photo, sel) > 1.3
    smooth = photo.copy()
    smooth[sel] = blurred(photo, 3.0)[sel]  # a blurred patch loses the edge's energy
    assert edge_gradient_ratio(smooth, photo, sel) < 0.8


def test_structure_correlation_keeps_strands_and_is_not_fooled_by_grain():
    photo = noisy(seed=3)
    where = np.ones(photo.shape[:2], bool)
    assert structure_correlation(photo, photo, where) == pytest.approx(1.0)
    recoloured = np.clip(photo.astype(int) * [0.6, 0.8, 1.0] + [90, 40, 0], 0, 255)
    assert structure_correlation(recoloured.astype(np.uint8), photo, where) > 0.95
    grain = noisy(seed=4)  # as much fine detail as the photo, none of its structure
    smear = blurred(photo, 3.0)
    assert abs(structure_correlation(grain, photo, where)) < 0.1
    assert detail_ratio(grain, photo, where) > 0.8  # the detail ratio would pass it
    assert structure_correlation(smear, photo, where) < 0.5


def test_cielab_of_known_colours():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    lab = cielab(rgb)[0]
    assert lab[0] == pytest.approx([100, 0, 0], abs=0.1)
    assert lab[1] == pytest.approx([0, 0, 0], abs=0.1)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.2)


def test_seam_steps_see_a_step_and_not_a_fade():
    photo = noisy(seed=5)
    sel = make_mask(120, 160, (30, 40, 90, 120)) > 0
    assert seam_steps(photo, photo, sel) == (0.0, 0.0)
    step = photo.copy()  # a tone change (×1.3) that stops at the edge: texture kept
    step[sel] = np.clip(step[sel].astype(float) * 1.3, 0, 255).round().astype(np.uint8)
    colour, texture = seam_steps(step, photo, sel)
    assert colour > 10 and texture < 0.2
    yy, xx = np.mgrid[0:120, 0:160]  # the same ×1.3 faded in over 30 px from the edge
    depth = np.minimum.reduce([yy - 30, 89 - yy, xx - 40, 119 - xx])
    ramp = np.clip(depth / 30, 0, 1)[..., None] * sel[..., None] * 0.3
    faded = np.clip(photo * (1 + ramp), 0, 255).round().astype(np.uint8)
    assert seam_steps(faded, photo, sel)[0] < colour / 3
    smooth = photo.copy()
    smooth[sel] = blurred(photo, 2.0)[sel]  # the texture stops at the edge
    assert seam_steps(smooth, photo, sel)[1] > 1
    # New content whose own edge is the boundary (the reference has that step too): no seam;
    # the same step where the reference fades is one.
    assert seam_steps(photo, step, sel, reference=step)[0] == pytest.approx(0, abs=1e-6)
    assert seam_steps(photo, step, sel, reference=faded)[0] > colour / 2


def test_photo_metrics_split_kept_and_replaced_content():
    photo = noisy(seed=3)
    mask = make_mask(120, 160, (20, 20, 100, 140))
    out = photo.copy()
    out[20:100, 80:140] = 128  # the right half replaced by flat content
    replaced = np.zeros((80, 120), np.float32)
    replaced[:, 60:] = 1.0
    m = photo_metrics(photo, out, mask, replaced, (20, 100, 20, 140))
    assert m["psnr_kept"] == math.inf and m["detail_ratio_kept"] == pytest.approx(1, abs=0.01)
    assert m["detail_ratio"] < 0.7 and m["replaced_fraction"] == pytest.approx(0.5)
    assert m["psnr_inside"] < 30
    none = photo_metrics(photo, photo, mask)
    assert none["psnr_inside"] == math.inf and none["replaced_fraction"] == 0
