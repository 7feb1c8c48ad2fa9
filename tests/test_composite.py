"""Step 4 at the photo's resolution (core/composite.py): only the edit's change goes in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from samples import make_mask, make_photo

from ganpaint.core.composite import (
    CompositeConfig,
    Layers,
    composite,
    feather_weights,
    grain,
    replaced_map,
    replaced_share,
    upsample_window,
)
from ganpaint.core.metrics import (
    detail_ratio,
    edge_gradient_ratio,
    psnr_photo,
    structure_correlation,
)
from ganpaint.core.photo import Box, crop, selection_box, to_model

R = 32


def textured(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """make_photo plus fine texture (what a generator at R px cannot render)."""
    top = 65535 if dtype == np.uint16 else 255
    base = make_photo(h, w, 3, np.uint16, seed)
    rng = np.random.default_rng(seed)
    img = base.astype(np.float64) / 65535 + rng.normal(0, 0.06, (h, w, 3))
    return np.round(np.clip(img, 0, 1) * top).astype(dtype)


def layers_for(photo: np.ndarray, box: Box, edit=None) -> Layers:
    """x = the crop at R; unedited = x plus a fit error; edited = unedited + edit(x)."""
    x = to_model(crop(photo[..., :3], box), R)
    g = torch.Generator().manual_seed(3)
    b = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    e = b if edit is None else edit(b)
    return Layers(x, e, b, torch.ones(1, 1, R, R))


def square(t: torch.Tensor, y0: float, y1: float, x0: float, x1: float, value) -> torch.Tensor:
    out = t.clone()
    r = t.shape[-1]
    out[..., round(y0 * r) : round(y1 * r), round(x0 * r) : round(x1 * r)] = value
    return out


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4)])
def test_null_edit_returns_the_photo_bit_for_bit(dtype, channels):
    photo = make_photo(300, 400, channels, dtype)
    mask = make_mask(300, 400, (100, 120, 200, 280), soft=6)
    box = selection_box(mask)
    out = composite(photo, mask, box, layers_for(photo, box))
    assert out.image.dtype == photo.dtype and np.array_equal(out.image, photo)
    assert out.replaced.max() == 0


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4)])
def test_only_the_selection_changes_and_alpha_stays(dtype, channels):
    photo = make_photo(300, 400, channels, dtype)
    mask = make_mask(300, 400, (100, 120, 200, 280), soft=6)
    box = selection_box(mask)
    layers = layers_for(photo, box, lambda b: square(b, 0.3, 0.7, 0.3, 0.7, -1.0))
    out = composite(photo, mask, box, layers).image
    assert out.shape == photo.shape and out.dtype == photo.dtype
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    if channels == 4:
        assert np.array_equal(out[..., 3], photo[..., 3])
    top = np.iinfo(dtype).max
    centre = (slice(140, 160), slice(190, 210), slice(0, 3))
    assert out[centre].mean() < 0.1 * top < photo[centre].mean()  # the black square


def test_small_change_keeps_the_photos_detail_and_adds_the_change():
    photo = textured(256, 256)
    mask = make_mask(256, 256, (64, 64, 192, 192))
    box = selection_box(mask, context=0.5, min_size=R)
    # A gentle brightening everywhere the edit reaches: content stays, only its tone moves.
    out = composite(photo, mask, box, layers_for(photo, box, lambda b: b + 0.04)).image
    inner = np.zeros(mask.shape, bool)
    inner[90:166, 90:166] = True  # past the feather
    assert detail_ratio(out, photo, inner) == pytest.approx(1.0, abs=0.02)
    shift = out[inner].astype(float).mean() - photo[inner].astype(float).mean()
    assert shift == pytest.approx(0.02 * 255, abs=1.0)  # +0.04 in [-1, 1] is +2 % in [0, 1]
    assert psnr_photo(out, photo, inner) > 30


def test_new_structure_is_replaced_without_ghosting_the_old_detail_but_gets_grain():
    photo = textured(256, 256, seed=1)
    yy, xx = np.mgrid[0:256, 0:256]
    stripes = (np.sin(xx / 1.5) > 0)[..., None] * 80  # sharp old content G cannot render
    photo = np.clip(photo.astype(int) + stripes - 40, 0, 255).astype(np.uint8)
    mask = make_mask(256, 256, (64, 64, 192, 192))
    box = selection_box(mask, context=0.5, min_size=R)
    # G′ draws a checkerboard of 4-px blocks: structure no colour transform of the photo makes.
    check = torch.from_numpy(np.indices((R, R)).sum(0) // 4 % 2 * 1.2 - 0.6).float()
    layers = layers_for(
        photo, box, lambda b: torch.where(square(b, 0.2, 0.8, 0.2, 0.8, 9.0) == 9.0, check, b)
    )
    res = composite(photo, mask, box, layers)
    out = res.image
    inner = np.zeros(mask.shape, bool)
    inner[100:156, 100:156] = True
    ry0, _, rx0, _ = res.window
    assert res.replaced[100 - ry0 : 156 - ry0, 100 - rx0 : 156 - rx0].min() > 0.99
    old = photo[inner][:, 0].astype(float) - photo[inner][:, 0].mean()
    new = out[inner][:, 0].astype(float) - out[inner][:, 0].mean()
    assert abs(np.corrcoef(old, new)[0, 1]) < 0.05  # nothing of the stripes left
    # G′'s checkerboard, at its size: the block means follow it.
    crop_px = box.size / R
    centre = [
        (round(box.y0 + (i + 0.5) * crop_px), round(box.x0 + (j + 0.5) * crop_px))
        for i, j in ((13, 13), (13, 17))
    ]
    a, b = (out[y - 2 : y + 3, x - 2 : x + 3].mean() for y, x in centre)
    assert abs(a - b) > 0.4 * 255


def test_a_recolour_keeps_every_fine_structure_and_moves_the_colour():
    photo = textured(256, 256, seed=4)
    yy, xx = np.mgrid[0:256, 0:256]
    strands = (np.sin(xx / 1.2 + yy / 7) > 0.3)[..., None] * 60  # above what G renders
    photo = np.clip(photo.astype(int) + strands - 30, 0, 255).astype(np.uint8)
    mask = make_mask(256, 256, (64, 64, 192, 192))
    box = selection_box(mask, context=0.5, min_size=R)
    tint = torch.tensor([0.3, 0.1, -0.2]).view(1, 3, 1, 1)
    res = composite(photo, mask, box, layers_for(photo, box, lambda b: 0.7 * b + tint))
    inner = np.zeros(mask.shape, bool)
    inner[90:166, 90:166] = True
    assert res.replaced.max() < 0.05
    corr = structure_correlation(res.image, photo, inner)
    assert corr > 0.9  # every strand is still there
    x = (to_model(crop(photo, box), R) + 1) / 2  # the generator's change, in [0, 1]
    want = ((0.7 * (2 * x - 1) + tint) + 1) / 2 - x
    got = (res.image[inner].astype(float) - photo[inner]).mean(0) / 255
    inside = want[..., R // 3 : 2 * R // 3, R // 3 : 2 * R // 3].mean((0, 2, 3)).numpy()
    assert np.abs(got - inside).max() < 0.03


def test_the_colour_change_follows_the_photos_edges():
    # Dark left, bright right; the edit darkens only what is dark at R, right up to the edge.
    photo = textured(256, 256, seed=5)
    photo[:, :128] //= 4
    mask = make_mask(256, 256, (32, 32, 224, 224))
    box = selection_box(mask, context=0.5, min_size=R)
    res = composite(
        photo, mask, box, layers_for(photo, box, lambda b: torch.where(b < -0.5, b - 0.3, b))
    )
    change = res.image[96:160].astype(float).mean(-1) - photo[96:160].astype(float).mean(-1)
    assert change[:, 112:126].mean() < -0.1 * 255  # dark side, just left of the edge
    assert abs(change[:, 130:144].mean()) < 0.02 * 255  # bright side, in the same grid cell


def test_a_thin_selection_along_the_photos_edges_gets_the_whole_colour_change():
    # A dark band 24 px thick on a bright ground (short hair on a wall), selected along its
    # outline: the change fades in where the selection crosses the band's plain inside, not
    # over 2 generator px from its outline (which would leave most of the band unchanged).
    photo = textured(256, 256, seed=7)
    photo[116:140, 16:240] //= 4
    mask = np.zeros((256, 256), np.uint8)
    mask[116:140, 40:216] = 255  # the band's outline, less its two ends
    box = selection_box(mask, context=0.5, min_size=R)
    darker = layers_for(photo, box, lambda b: torch.where(b < -0.4, b - 0.3, b))

    def change(cfg: CompositeConfig) -> np.ndarray:
        out = composite(photo, mask, box, darker, cfg).image
        return (out[116:140].astype(float) - photo[116:140]).mean(-1)

    edge_aware, blind = change(CompositeConfig()), change(CompositeConfig(edge_eps=None))
    middle = slice(96, 160)  # along the band, away from its ends
    assert edge_aware[2:-2, middle].mean() < 0.8 * 0.15 * 255  # ≈ the generator's −0.15
    assert edge_aware[2:-2, middle].mean() < 2 * blind[2:-2, middle].mean()
    # Where the selection crosses the plain band (its ends), the change fades in from 0.
    assert np.abs(edge_aware[:, 40]).max() < 0.02 * 255


def test_a_black_and_white_photo_stays_black_and_white():
    grey = textured(200, 200, seed=6)[..., :1].repeat(3, axis=2)
    mask = make_mask(200, 200, (50, 50, 150, 150))
    box = selection_box(mask, context=0.5, min_size=R)
    tint = torch.tensor([0.2, -0.1, -0.3]).view(1, 3, 1, 1)
    res = composite(grey, mask, box, layers_for(grey, box, lambda b: b + tint))
    assert not np.array_equal(res.image, grey)
    assert np.array_equal(res.image[..., 0], res.image[..., 1])
    assert np.array_equal(res.image[..., 1], res.image[..., 2])


def test_edge_of_a_replaced_selection_shows_no_seam():
    photo = textured(300, 300, seed=2)
    mask = make_mask(300, 300, (80, 80, 220, 220))
    box = selection_box(mask, context=0.5, min_size=R)
    # Content replaced up to and past the selection's edge (the worst case for a seam).
    layers = layers_for(photo, box, lambda b: torch.full_like(b, 0.1))
    out = composite(photo, mask, box, layers).image
    ratio = edge_gradient_ratio(out, photo, mask >= 128)
    assert 1 / 1.3 < ratio < 1.3
    # The old composite's feather, min(m, blur(m)), stepped to ½ of the change at the edge.
    first_inside = out[80, 150].astype(float) - photo[80, 150]
    assert np.abs(first_inside).max() < 12


def test_feather_fades_from_zero_at_the_edge_and_never_grows():
    mask = make_mask(200, 240, (40, 40, 160, 200))
    for radius in (3, 20, 40):
        w = feather_weights(mask, radius)
        assert (w[mask == 0] == 0).all()
        assert w[40, 120] < 0.05 and w[100, 120] == pytest.approx(1.0)  # edge ≈ 0, centre 1
        assert w[40 + round(1.5 * radius), 120] > 0.9  # ~radius inside it is (nearly) full
        steps = np.abs(np.diff(w[:, 120]))
        assert steps.max() < 3.0 / radius  # a ramp, not a step
    soft = make_mask(100, 100, (30, 30, 50, 50), soft=10)
    assert (feather_weights(soft, 4) <= soft / 255 + 1e-6).all()
    edge = make_mask(100, 100, (0, 0, 50, 100))  # a selection at the image border
    assert feather_weights(edge, 8)[0, 50] > 0.99  # the image border is no seam


@pytest.mark.parametrize(("rows", "cols"), [((0, 200), (0, 200)), ((37, 90), (-12, 150))])
def test_upsample_window_is_the_bicubic_enlargement(rows, cols):
    t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    big = F.interpolate(t, size=(200, 200), mode="bicubic", align_corners=False)
    padded = F.pad(big, (20, 20, 20, 20), mode="replicate")
    want = padded[0, :, rows[0] + 20 : rows[1] + 20, cols[0] + 20 : cols[1] + 20]
    torch.testing.assert_close(upsample_window(t, 200, rows, cols), want, atol=1e-5, rtol=0)


def test_grain_matches_the_photos_energy_per_band_without_its_structure():
    g = torch.Generator().manual_seed(0)
    fine = 0.05 * torch.randn(3, 128, 128, generator=g)
    photo = (0.5 + fine).clamp(0, 1)
    photo[0] = photo[1]  # red and green grain fully correlated, blue independent
    n = grain(photo, torch.ones(128, 128), 3, seed=1)
    assert n.shape == photo.shape
    assert n.std().item() == pytest.approx((photo - photo.mean((1, 2), True)).std().item(), 0.2)
    c = torch.corrcoef(n.flatten(1))
    assert c[0, 1] > 0.95 and abs(c[0, 2]) < 0.1
    assert abs(torch.corrcoef(torch.stack([n[2].flatten(), photo[2].flatten()]))[0, 1]) < 0.05


def test_replaced_map_follows_the_change_inside_the_free_zone():
    b = torch.zeros(1, 3, R, R)
    e = square(b, 0.25, 0.75, 0.25, 0.75, 0.5)
    free = square(torch.zeros(1, 1, R, R), 0.0, 1.0, 0.0, 0.5, 1.0)  # left half free
    a = replaced_map(Layers(b, e, b, free), CompositeConfig())
    assert a[0, 0, 16, 12] == pytest.approx(1.0) and a[0, 0, 16, 20] == 0  # right: not free
    assert a[0, 0, 2, 2] == 0  # no change


def test_replaced_share_tells_new_content_from_a_recolour_before_compositing():
    photo = textured(256, 256, seed=5)
    mask = make_mask(256, 256, (64, 64, 192, 192))
    box = selection_box(mask, context=0.5, min_size=R)
    sel = to_model(crop(mask[..., None], box), R)[:, :1].add(1).div(2)
    tint = torch.tensor([0.3, 0.1, -0.2]).view(1, 3, 1, 1)
    recolour = layers_for(photo, box, lambda b: 0.7 * b + tint)
    check = torch.from_numpy(np.indices((R, R)).sum(0) // 2 % 2 * 1.6 - 0.8).float()
    new = layers_for(photo, box, lambda b: torch.where(sel > 0.5, check, b))
    cfg = CompositeConfig()
    share_recolour = replaced_share(recolour, sel, cfg)
    share_new = replaced_share(new, sel, cfg)
    assert share_recolour < 0.05 and share_new > 0.6
    # What it estimates is what composite then draws anew (inside the selection's feather).
    drawn = composite(photo, mask, box, new, cfg)
    y0, _, x0, _ = drawn.window
    assert drawn.replaced[90 - y0 : 166 - y0, 90 - x0 : 166 - x0].mean() > 0.95
