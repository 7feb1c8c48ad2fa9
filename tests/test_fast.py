"""The fast G′ path: exact window computation, locality, quality, early stop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from samples import make_mask, make_photo

from ganpaint.core import region
from ganpaint.core.adapt import AdaptConfig, adapt, keep_mask, make_perturbation, run_gprime
from ganpaint.core.fast import EarlyStop, FastConfig, PatchedPerturbation, base_fit, fast_adapt
from ganpaint.core.generators.base import freeze
from ganpaint.core.generators.progan import ProGAN256
from ganpaint.core.pipeline import EditSpec, edit_photo, reconstruct_photo


@pytest.fixture(scope="module")
def progan():
    torch.manual_seed(0)
    return freeze(ProGAN256())


def _random_pert(gen, variant):
    pert = make_perturbation(gen, AdaptConfig(width=8, variant=variant))
    with torch.no_grad():
        for p in pert.parameters():  # δ ≠ 0, so the check covers the perturbation too
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return pert


# Full width or full height but not both (wide and tall selections) are the cases where a
# crop can be mistaken for the full frame.
TARGETS = [
    (0.25, 0.5, 0.125, 0.75),
    (0.0, 0.33, 0.5, 1.0),
    (0.6, 1.0, 0.0, 0.2),
    (0.3, 0.6, 0.0, 1.0),
    (0.0, 1.0, 0.4, 0.7),
    (0, 1, 0, 1),
]


@pytest.mark.parametrize("which", ["dcgan", "progan"])
def test_window_equals_full_computation(which, dcgan, progan):
    gen = dcgan if which == "dcgan" else progan
    h, res = gen.default_split(), gen.resolution
    with torch.no_grad():
        z_h = gen.run(gen.sample_latent(1, torch.Generator().manual_seed(0)), 0, h)
        deltas = _random_pert(gen, "direct")()
        full = run_gprime(gen, z_h, deltas)
        for t in TARGETS:
            target = tuple(round(v * res) for v in t)
            wins = region.plan(gen, h, target)
            d_w = [region.crop(d, w) for d, w in zip(deltas, wins[1:-1], strict=True)]
            out = region.run_window(gen, z_h, wins, d_w)
            torch.testing.assert_close(out, region.crop(full, target), atol=1e-5, rtol=0)
            # The fast path's split: the first layer once, the rest from its output.
            first = region.run_window(gen, z_h, wins[:2], start=h)
            rest = region.run_window(gen, first * (1 + d_w[0]), wins[1:], d_w[1:], start=h + 1)
            torch.testing.assert_close(rest, out, atol=0, rtol=0)


def test_interior_delta_reaches_only_target(progan):
    gen, h = progan, progan.default_split()
    target = (64, 128, 32, 192)
    with torch.no_grad():
        z_h = gen.run(gen.sample_latent(1, torch.Generator().manual_seed(0)), 0, h)
        deltas = _random_pert(gen, "direct")()
        moved = [d.clone() for d in deltas]
        for d, w in zip(moved, region.interior(gen, h, target), strict=True):
            d[..., w[0] : w[1], w[2] : w[3]] += 1.0
        diff = (run_gprime(gen, z_h, moved) - run_gprime(gen, z_h, deltas)).abs()
    inside = torch.zeros_like(diff, dtype=torch.bool)
    inside[..., target[0] : target[1], target[2] : target[3]] = True
    assert diff[~inside].max() == 0
    assert diff[inside].max() > 0


def _case(gen, seed=0):
    g = torch.Generator().manual_seed(seed)
    res, h = gen.resolution, gen.default_split()
    with torch.no_grad():
        z_h0 = gen.run(gen.sample_latent(1, g), 0, h)
        x = (gen.run(z_h0, h) + 0.1 * torch.randn(1, 3, res, res, generator=g)).clamp(-1, 1)
    mask = torch.zeros(1, 1, res, res)
    mask[..., res // 4 : res // 2, res // 4 : res // 2] = 1
    z_h = z_h0.clone()
    k = res // z_h.shape[-1]
    z_h[..., res // 4 // k : res // 2 // k, res // 4 // k : res // 2 // k] *= 2.0  # "the edit"
    return x, z_h0, z_h, mask, keep_mask(mask, res)


def test_fast_path_changes_only_the_window_and_keeps_quality(dcgan):
    gen = dcgan
    x, z_h0, z_h, mask, keep = _case(gen)
    cfg = AdaptConfig(steps=150)
    base = adapt(gen, z_h0, x, torch.ones_like(keep), cfg)
    ref = adapt(gen, z_h, x, keep, cfg)
    fast = fast_adapt(gen, z_h, x, keep, cfg, FastConfig(max_steps=150), base=base.fit)
    pert = fast.fit.perturbation
    assert isinstance(pert, PatchedPerturbation)
    # δ outside the trainable windows is the base fit's, bit for bit.
    with torch.no_grad():
        for d, b, w in zip(pert(), base.perturbation(), pert.windows, strict=True):
            outside = torch.ones_like(d, dtype=torch.bool)
            outside[..., w[0] : w[1], w[2] : w[3]] = False
            assert torch.equal(d[outside], b[outside])
        # G′ changes only inside the optimised window (plus nothing else).
        target = region.grow(region.bbox(keep < 1 - 1e-4), round(16 * 64 / 256), 64)
        base_img = run_gprime(gen, z_h, base.perturbation())
    out = torch.ones_like(fast.image, dtype=torch.bool)
    out[..., target[0] : target[1], target[2] : target[3]] = False
    assert torch.equal(fast.image[out], base_img[out])
    assert fast.psnr_keep > ref.psnr_keep - 0.5  # within 0.5 dB of faithful


def test_fast_path_starts_from_g_where_the_edit_frees_it(dcgan):
    """The base fit's δ reproduced the *old* content; kept under the edit it would ghost it
    back. The fast fit starts with δ = 0 wherever an output pixel it covers is free."""
    gen = dcgan
    x, z_h0, z_h, mask, keep = _case(gen)
    base = fast_adapt(gen, z_h0, x, torch.ones_like(keep), fcfg=FastConfig(max_steps=30))
    with torch.no_grad():
        assert all(d.abs().amax() > 0 for d in base.perturbation())
        start = fast_adapt(gen, z_h, x, keep, fcfg=FastConfig(max_steps=0), base=base.fit)
        for d, b in zip(start.perturbation(), base.perturbation(), strict=True):
            free = F.adaptive_max_pool2d(1 - keep, d.shape[-2:])  # 1: fully free
            assert (free > 1 - 1e-6).any() and (d * (free > 1 - 1e-6)).abs().amax() < 1e-5
            kept = free == 0
            assert torch.equal(d[kept.expand_as(d)], b[kept.expand_as(b)])  # the base's δ
            assert (d.abs() <= b.abs()).all()
        no_reset = fast_adapt(
            gen, z_h, x, keep, fcfg=FastConfig(max_steps=0, reset_free=False), base=base.fit
        )
        pairs = zip(no_reset.perturbation(), base.perturbation(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_early_stop_stops():
    stop = EarlyStop(patience=20, min_gain=0.05)
    scores = [10.0, 11.0, 11.5, 11.52, 11.53, 11.53, 11.54]
    done = [stop.update(10 * (i + 1), s) for i, s in enumerate(scores)]
    assert done[:4] == [False] * 4 and done[-1]


def test_fast_adapt_stops_early_when_psnr_plateaus(dcgan):
    x, z_h0, _, _, keep = _case(dcgan)
    fcfg = FastConfig(max_steps=400, check_every=5, patience=10, min_gain=0.5)
    res = base_fit(dcgan, z_h0, x, AdaptConfig(steps=400), fcfg)
    assert res.steps < 400


def test_pipeline_quality_fast(dcgan, fast_cfg):
    photo = make_photo(96, 128)
    mask = make_mask(96, 128, (30, 40, 60, 80))
    fast_cfg.quality = "fast"
    fast_cfg.fast = FastConfig(max_steps=20, base_steps=20)
    cache: dict = {}
    reconstruct_photo(dcgan, photo, fast_cfg, cache=cache)
    res = edit_photo(dcgan, photo, mask, EditSpec([1, 2, 3], "remove"), fast_cfg, cache=cache)
    # The region's first edit: one cold fit on the edit's keep mask, no base fit made.
    session = next(s for s in cache.values() if s.base is None)
    first = session.fit
    assert first.keep is not None and first.keep.min() < 1e-3
    # A re-edit of the same selection starts from that fit: outside the edit's window its
    # δ is the first fit's, bit for bit.
    again = edit_photo(
        dcgan, photo, mask, EditSpec([4, 5], "add", [2.0, 2.0]), fast_cfg, cache=cache
    )
    assert again.session_reused and session.fit is not first
    with torch.no_grad():
        d1, d2 = first.perturbation()[-1], session.fit.perturbation()[-1]
    same = (d1 == d2).flatten()
    assert same.any() and not same.all()
    # One-off (no session kept): the same cold early-stopped fit.
    once = edit_photo(dcgan, photo, mask, EditSpec([1, 2, 3], "remove"), fast_cfg)
    outside = mask == 0
    outside[20:70, 30:90] = False  # feathered band around the selection
    for r in (res, again, once):
        assert r.image.shape == photo.shape
        assert (r.image[outside] == photo[outside]).all()
        assert (r.image[mask > 0] != photo[mask > 0]).any()
    assert not once.session_reused and 0 < once.steps <= 20
    fast_cfg.quality = "bogus"
    with pytest.raises(ValueError, match="quality"):
        edit_photo(dcgan, photo, mask, EditSpec([1], "remove"), fast_cfg, cache=cache)
