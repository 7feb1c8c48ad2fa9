"""A remove acts only where the concept is: the presence probe and the gated remove."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_photo

from ganpaint.core.concepts import ConceptError, ConceptLibrary
from ganpaint.core.concepts.background import (
    background_level,
    calibrate,
    invert_windows,
    photo_windows,
)
from ganpaint.core.concepts.rank import presence_probe
from ganpaint.core.concepts.record import Concept
from ganpaint.core.concepts.regions import box_mask
from ganpaint.core.edit import Presence, apply_edit, presence_map, remove_where_present
from ganpaint.core.imageio import read_image, write_image
from ganpaint.core.pipeline import EditSpec, edit_photo, prepare

SCRIPTS = Path(__file__).parents[1] / "scripts"


def test_presence_probe_points_at_what_tells_the_examples_apart():
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(20, 6, 4, 4, generator=g) * 0.2
    positive = torch.arange(20) < 6
    acts[:, 1, :2] += 1.0  # in the region on every example: the place, not the thing
    acts[:6, 3, :2] += 1.0  # in the region only on the positives
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1
    d, t = presence_probe(acts, mask, positive, quantile=0.8)
    assert int(d.abs().argmax()) == 3 and float(d.norm()) == pytest.approx(1.0)
    neg = acts[6:, :, :2].permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    assert t == pytest.approx(float(np.quantile(neg @ d.numpy(), 0.8)), abs=1e-6)
    for bad_positive in (torch.ones(20, dtype=torch.bool), torch.zeros(20, dtype=torch.bool)):
        with pytest.raises(ValueError, match="with and without"):
            presence_probe(acts, mask, bad_positive)
    with pytest.raises(ValueError, match="empty"):
        presence_probe(acts, torch.zeros(1, 1, 32, 32), positive)


def random_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(2, 8, 6, 6, generator=g)  # inversions go below 0 too
    d = torch.randn(8, generator=g)
    mask = torch.zeros(2, 1, 24, 24)
    mask[..., :, :12] = 1  # the left half of the layer's cells
    return r, d / d.norm(), mask


def test_gated_remove_leaves_absent_cells_bit_for_bit_and_lowers_present_ones():
    r, d, mask = random_case()
    units = [1, 4, 6]
    t = float(presence_map(r, Presence(tuple(d.tolist()), 0.0)).median())
    presence = Presence(tuple(d.tolist()), t)
    r_e, g = remove_where_present(r, mask, units, presence)
    p, p_e = presence_map(r, presence), presence_map(r_e, presence)
    selected = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    selected[..., :3] = True
    absent = (p <= t) | ~selected
    assert torch.equal(r_e * absent, r * absent)  # bit for bit where nothing is removed
    assert bool((g[absent] == 0).all()) and bool((g[~absent] > 0).all())
    others = [c for c in range(8) if c not in units]
    assert torch.equal(r_e[:, others], r[:, others])  # only the concept's units move
    sub, sub_e = r[:, units], r_e[:, units]
    assert bool((sub_e.abs() <= sub.abs()).all()) and bool((sub_e * sub >= 0).all())  # none rise
    partial = ~absent & (g < 1)
    assert torch.allclose(p_e[partial], torch.full_like(p_e[partial], t), atol=1e-5)
    full = ~absent & (g == 1)  # the units' share was not enough: all of them off
    assert torch.equal(sub_e * full, torch.zeros_like(sub_e))
    assert bool(partial.any()) and bool(full.any())  # the case exercises both


def test_gated_remove_below_every_cell_is_the_methods_remove():
    r, _, mask = random_case(1)
    r = r.abs()
    units = [0, 2, 5]
    d = torch.zeros(8)
    d[units] = torch.tensor([0.6, 0.64, 0.48])
    r_e, g = remove_where_present(r, mask, units, Presence(tuple(d.tolist()), -1.0))
    assert torch.equal(r_e, apply_edit(r, mask, units, torch.zeros(3)))
    assert float(g[..., :3].min()) == 1.0 and float(g[..., 3:].max()) == 0.0
    with pytest.raises(IndexError):
        remove_where_present(r, mask, [8], Presence(tuple(d.tolist()), 0.0))
    with pytest.raises(ValueError, match="units"):
        presence_map(r, Presence((1.0, 0.0), 0.0))


def test_presence_round_trips_and_is_checked():
    base = dict(name="x", model="m", layer="layer2", units=[1, 2], values=[1.0, 2.0])
    c = Concept(**base, source="learned", presence=Presence((0.6, 0.8, 0.0), 0.25, 0.9))
    back = Concept.from_dict(c.to_dict())
    assert back.presence == c.presence and back.presence.background_quantile is None
    assert "background_quantile" not in c.to_dict()["presence"]
    calibrated = Concept(
        **base, source="learned", presence=Presence((0.6, 0.8, 0.0), 0.5, 0.9, 0.99)
    )
    assert Concept.from_dict(calibrated.to_dict()).presence == calibrated.presence
    assert "presence" not in Concept(**base, source="learned").to_dict()  # old files unchanged
    back.check_layer({"layer2": 3})
    with pytest.raises(ConceptError, match="direction has 3 units"):
        back.check_layer({"layer2": 4})
    for bad in (
        {"direction": [0.6, float("nan")], "threshold": 0.1},
        {"direction": [0.6, 0.8], "threshold": float("inf")},
        {"direction": [0.6, 0.8], "threshold": 0.1, "quantile": 1.5},
        {"direction": [0.6, 0.8], "threshold": 0.1, "background_quantile": 0},
        {"direction": [], "threshold": 0.1},
        {"direction": "up", "threshold": 0.1},
        [0.6, 0.8],
    ):
        with pytest.raises(ConceptError, match="presence"):
            Concept.from_dict({**c.to_dict(), "presence": bad})


def test_calibration_raises_the_level_to_what_the_background_reaches_and_never_lowers_it():
    r, d, _ = random_case(1)
    background = r * 2 + 0.5  # [2, 8, 6, 6]: 72 cells of "real photos without the thing"
    p = torch.einsum("nchw,c->nhw", background, d).flatten()
    low, high = Presence(tuple(d.tolist()), -1e3), Presence(tuple(d.tolist()), 1e3)
    raised = calibrate(low, background, 0.9)
    assert raised.threshold == pytest.approx(float(torch.quantile(p, 0.9)), abs=1e-5)
    assert raised.background_quantile == 0.9 and raised.direction == low.direction
    assert int((p > raised.threshold).sum()) <= 0.1 * p.numel() + 1  # ≈ 90 % is left alone
    assert calibrate(high, background, 0.9).threshold == 1e3
    assert background_level(background, low, 0.5) < background_level(background, low, 0.9)
    with pytest.raises(ValueError, match="units"):
        background_level(background[:, :4], low, 0.9)
    with pytest.raises(ValueError, match="quantile"):
        background_level(background, low, 1.0)


def test_photo_windows_lie_inside_the_photo_at_every_scale_and_repeat_with_the_seed():
    boxes = photo_windows(300, 500, per_scale=3, scales=(0.2, 0.5, 1.0), seed=4)
    assert [b.size for b in boxes] == [60] * 3 + [150] * 3 + [300] * 3
    for b in boxes:
        assert 0 <= b.x0 <= 500 - b.size and 0 <= b.y0 <= 300 - b.size
    assert boxes == photo_windows(300, 500, per_scale=3, scales=(0.2, 0.5, 1.0), seed=4)
    assert boxes != photo_windows(300, 500, per_scale=3, scales=(0.2, 0.5, 1.0), seed=5)


def test_background_windows_are_inverted_as_a_selection_region_is(dcgan, fast_cfg):
    """invert_windows gives the representation pipeline.prepare gives the same region."""
    photo = make_photo(200, 240, seed=5)
    box = photo_windows(200, 240, per_scale=1, scales=(0.5,), seed=0)[0]  # 100 px
    acts = invert_windows(dcgan, photo, [box], fast_cfg.invert)
    assert acts.shape == (1, 256, 8, 8) and acts.device.type == "cpu"
    mask = np.zeros(photo.shape[:2], np.uint8)  # a selection whose region is that window
    q = box.size // 4
    mask[box.y0 + q : box.y0 + 3 * q, box.x0 + q : box.x0 + 3 * q] = 255
    prep = prepare(dcgan, photo, mask, fast_cfg)
    assert prep.box == box
    assert torch.allclose(acts, prep.session.inversion.r.cpu(), atol=1e-5)


@torch.no_grad()
def test_shipped_open_mouth_remove_spares_faces_without_one(dcgan, monkeypatch):
    """On the GAN samples the concept was learned from, the method's remove changes closed
    mouths almost half as much as open ones; the gated remove leaves most closed mouths
    exactly as they were and keeps most of the change on the open ones."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from make_starter_concepts import EXAMPLE_SEED, EXAMPLES, LEARNED

    c = ConceptLibrary("digiface-dcgan64", user_dir=Path("/nonexistent/never")).get("open mouth")
    assert c.presence is not None and c.ops == ["remove"]
    assert c.presence.background_quantile is not None  # calibrated on real photos
    units, _ = c.top("high")
    k = dcgan.index(c.layer)
    r = dcgan.run(
        dcgan.sample_latent(EXAMPLES, torch.Generator().manual_seed(EXAMPLE_SEED)), 0, k + 1
    )
    positive = torch.zeros(EXAMPLES, dtype=torch.bool)
    positive[list(LEARNED["open mouth"].positives)] = True
    region = torch.from_numpy(box_mask(LEARNED["open mouth"].region, 64))[None, None]
    before = dcgan.run(r, k + 1)

    def change(r_e):  # mean |ΔG| in the region, per sample
        d = (dcgan.run(r_e, k + 1) - before).abs().mean(1, keepdim=True)
        return (d * region).sum((1, 2, 3)) / region.sum()

    plain = change(apply_edit(r, region, units, torch.zeros(len(units))))
    gated = change(remove_where_present(r, region, units, c.presence)[0])
    assert float(plain[~positive].mean()) > 0.35 * float(plain[positive].mean())
    assert float(gated[~positive].mean()) < 0.35 * float(plain[~positive].mean())
    assert float((gated[~positive] == 0).float().mean()) > 0.5  # untouched, bit for bit
    assert float(gated[positive].mean()) > 0.5 * float(plain[positive].mean())


def test_a_remove_where_the_concept_is_absent_gives_the_photo_back(dcgan, fast_cfg):
    photo = make_photo(80, 96, seed=3)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[20:60, 24:72] = 255
    units = [3, 17, 42]
    d = torch.zeros(256)
    d[units] = 1 / 3**0.5
    cache: dict = {}
    nowhere = Presence(tuple(d.tolist()), 1e3)  # no cell reaches it
    res = edit_photo(
        dcgan, photo, mask, EditSpec(units, "remove", presence=nowhere), fast_cfg, cache=cache
    )
    assert np.array_equal(res.image, photo) and res.metrics["present_fraction"] == 0.0
    plain = edit_photo(dcgan, photo, mask, EditSpec(units, "remove"), fast_cfg, cache=cache)
    assert not np.array_equal(plain.image, photo) and "present_fraction" not in plain.metrics


def test_a_remove_acts_where_present_unless_told_remove_all(dcgan):
    """The edit the CLI and the server resolve (core.resolve) carries the concept's
    presence probe for a remove, and none with remove_all."""
    from ganpaint.core.resolve import resolve_edit

    shipped = ConceptLibrary("digiface-dcgan64", user_dir=Path("/nonexistent/never"))
    presence = shipped.get("open mouth").presence
    spec = resolve_edit(dcgan, "remove", concept="open mouth", library=shipped)
    assert spec.presence == presence and presence is not None
    spec = resolve_edit(dcgan, "remove", concept="open mouth", remove_all=True, library=shipped)
    assert spec.presence is None


def test_the_cli_says_when_a_remove_found_nothing_or_an_op_is_not_the_concepts(
    dcgan, tmp_path, capsys
):
    from ganpaint.server.cli.main import main

    photo = make_photo(96, 96, seed=2)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[30:60, 20:70] = 255
    write_image(tmp_path / "p.png", photo)
    write_image(tmp_path / "m.png", mask)

    def edit(op: str, out: str) -> int:
        return main(
            ["edit", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "-o",
             str(tmp_path / out), "--concept", "blond hair", "--op", op, "--quiet", "--json",
             "--quality", "fast", "--steps", "20", "--invert-steps", "20"]
        )  # fmt: skip

    assert edit("remove", "a.png") == 0
    out, err = capsys.readouterr()
    assert "is not among the concept's operations (add)" in err
    # a made-up picture, no face: the calibrated probe finds no blond hair (the photo back)
    assert json.loads(out)["present_fraction"] == 0 and "found no blond hair" in err
    assert np.array_equal(read_image(tmp_path / "a.png"), photo)
    assert edit("add", "b.png") == 0
    err = capsys.readouterr().err
    assert "operations" not in err and "found no" not in err
