"""The method end to end on photos of real sizes, with the real default model."""

import dataclasses

import numpy as np
import pytest
from samples import make_mask, make_photo

from ganpaint.core.invert import InvertConfig, default_config
from ganpaint.core.pipeline import (
    EditSpec,
    WouldReplace,
    edit_photo,
    prepare,
    reconstruct_photo,
)

UNITS = [3, 17, 42, 99]


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4)])
def test_edit_changes_only_the_selection_of_a_large_photo(dcgan, fast_cfg, dtype, channels):
    photo = make_photo(800, 1000, channels, dtype)
    mask = make_mask(800, 1000, (300, 400, 420, 560), soft=12)
    res = edit_photo(dcgan, photo, mask, EditSpec(UNITS, "add"), fast_cfg)
    out = res.image
    assert out.shape == photo.shape and out.dtype == photo.dtype
    outside = mask == 0
    assert np.array_equal(out[outside], photo[outside])  # bit-identical
    if channels == 4:
        assert np.array_equal(out[..., 3], photo[..., 3])
    inside = mask == 255
    changed = (out[..., :3] != photo[..., :3]).any(axis=2)
    assert changed[inside].mean() > 0.9
    assert np.isfinite(res.psnr_keep) and np.isfinite(res.psnr_inversion)
    assert res.steps == fast_cfg.adapt.steps


def test_add_and_remove_differ(dcgan, fast_cfg):
    photo = make_photo(200, 240, seed=1)
    mask = make_mask(200, 240, (60, 80, 140, 160))
    cache: dict = {}
    add = edit_photo(dcgan, photo, mask, EditSpec(UNITS, "add"), fast_cfg, cache=cache)
    rem = edit_photo(dcgan, photo, mask, EditSpec(UNITS, "remove"), fast_cfg, cache=cache)
    assert not add.session_reused and rem.session_reused
    assert len(cache) == 1
    inside = mask == 255
    diff = np.abs(add.image.astype(int) - rem.image.astype(int))[inside].mean()
    assert diff > 1


def test_session_key_follows_the_content(dcgan, fast_cfg):
    photo = make_photo(100, 100)
    mask = make_mask(100, 100, (30, 30, 60, 60))
    cache: dict = {}
    a = prepare(dcgan, photo, mask, fast_cfg, cache=cache)
    b = prepare(dcgan, photo.copy(), mask, fast_cfg, cache=cache)
    other = photo.copy()
    other[40, 40] ^= 0xFF
    c = prepare(dcgan, other, mask, fast_cfg, cache=cache)
    assert b.reused and not c.reused and a.session.key == b.session.key != c.session.key


def test_a_larger_budget_refines_the_sessions_inversion(dcgan, fast_cfg):
    # A region inverted within a small budget (the plug-in's prepare with a fast edit in
    # mind) and then edited faithfully: the inversion goes on from where it stopped.
    photo = make_photo(100, 100, seed=3)
    mask = make_mask(100, 100, (30, 30, 60, 60))
    cache: dict = {}
    short = dataclasses.replace(fast_cfg, invert=InvertConfig(starts=2, z_steps=0, r_steps=5))
    first = prepare(dcgan, photo, mask, short, cache=cache).session.inversion
    assert first.budget == 5 and first.steps <= 5
    longer = dataclasses.replace(short, invert=dataclasses.replace(short.invert, r_steps=40))
    prep = prepare(dcgan, photo, mask, longer, cache=cache)
    refined = prep.session.inversion
    assert prep.reused and refined.budget == 40 and refined.steps > first.steps
    assert refined.psnr > first.psnr + 0.1
    again = prepare(dcgan, photo, mask, short, cache=cache).session.inversion
    assert again is refined  # a smaller budget takes what is there


def test_faithful_inversion_runs_until_it_stalls():
    fast, faithful = default_config(None), default_config(None, quality="faithful")
    assert faithful.r_steps > fast.r_steps and faithful.patience > fast.patience
    assert default_config(None, 30, quality="faithful").r_steps == 30  # the cap still caps


def test_reconstruct_fits_the_whole_frame(dcgan, fast_cfg):
    photo = make_photo(90, 120)
    res = reconstruct_photo(dcgan, photo, fast_cfg)
    assert res.image.shape == photo.shape
    assert res.psnr_keep > res.psnr_inversion  # G′ closes part of the gap
    err = np.abs(res.image.astype(int) - photo.astype(int)).mean()
    assert err < 40


def test_bad_edits_are_rejected(dcgan, fast_cfg):
    photo = make_photo(50, 50)
    mask = make_mask(50, 50, (10, 10, 20, 20))
    with pytest.raises(ValueError, match=r"unit indices \[256\] out of range: .* has units 0..255"):
        edit_photo(dcgan, photo, mask, EditSpec([256], "add"), fast_cfg)
    with pytest.raises(ValueError, match="add or remove"):
        edit_photo(dcgan, photo, mask, EditSpec([1], "paint"), fast_cfg)


def test_an_edit_that_would_draw_a_large_selection_anew_stops_before_the_fit(dcgan, fast_cfg):
    photo = make_photo(400, 400, seed=2)
    mask = make_mask(400, 400, (80, 80, 260, 260))  # a crop of ≥ 4× the model's 64 px
    spec = EditSpec(UNITS, "add")
    cache: dict = {}
    stages: list[str] = []
    asking = dataclasses.replace(fast_cfg, confirm_replaced=-1.0)  # any share: ask
    with pytest.raises(WouldReplace, match="would draw .* of the selection anew") as e:
        edit_photo(dcgan, photo, mask, spec, asking, lambda p: stages.append(p.stage), None, cache)
    share = e.value.share
    assert 0 <= share <= 1 and e.value.scale >= 4
    assert "invert" in stages and "adapt" not in stages  # no fit ...
    assert len(cache) == 1  # ... and the inversion is kept
    # The threshold decides: just above the estimate, the edit runs.
    above = dataclasses.replace(fast_cfg, confirm_replaced=share + 1e-3)
    res = edit_photo(dcgan, photo, mask, spec, above, cache=cache)
    assert res.session_reused and res.steps > 0
    # A small crop is not enlarged enough for new content to look soft: never asked.
    small, small_mask = make_photo(100, 100), make_mask(100, 100, (30, 30, 60, 60))
    edit_photo(dcgan, small, small_mask, spec, asking)
