"""The default model's built-in concepts: plain names, ops, hidden groups, and real edits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ganpaint.core.concepts import ConceptError, ConceptLibrary
from ganpaint.core.concepts.learn import concept_from_examples
from ganpaint.core.concepts.rank import contrast_scores
from ganpaint.core.concepts.record import Concept
from ganpaint.core.concepts.regions import FACE_REGIONS, box_mask, ellipse_mask
from ganpaint.core.edit import apply_edit
from ganpaint.server import concept_store
from ganpaint.server.cli.main import main as cli_main

UNNAMED = re.compile(r"^group-\d+$")


def builtins() -> list[Concept]:
    return ConceptLibrary("digiface-dcgan64", user_dir=Path("/nonexistent/never")).builtins()


def test_ops_where_hidden_round_trip_and_validation():
    base = dict(name="x", model="m", layer="layer2", units=[1, 2], values=[1.0, 2.0])
    c = Concept(**base, source="learned", ops=["add"], where="on a face", hidden=True)
    d = c.to_dict()
    assert d["ops"] == ["add"] and d["where"] == "on a face" and d["hidden"] is True
    back = Concept.from_dict(d)
    assert back.ops == ["add"] and back.where == "on a face" and back.hidden
    assert back.supports("add") and not back.supports("remove")
    plain = Concept(**base, source="learned")
    assert plain.ops == ["add", "remove"] and not plain.hidden
    assert {"ops", "where", "hidden"}.isdisjoint(plain.to_dict())  # old files stay the same
    for bad in ([], ["paint"], ["add", "add"], "add"):
        with pytest.raises(ConceptError, match="ops"):
            Concept.from_dict({**base, "source": "learned", "ops": bad})


def test_contrast_scores_find_the_thing_not_the_place():
    torch.manual_seed(0)
    acts = torch.rand(6, 4, 8, 8) * 0.1
    positive = torch.tensor([True, True, True, False, False, False])
    acts[:, 1, :2] += 1.0  # fires in the region on every example: a place, not a thing
    acts[:3, 2, :2] += 1.0  # fires in the region only where the thing is
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :16, :] = 1
    scores, inside = contrast_scores(acts, mask, positive, torch.ones(4))
    assert int(scores.argmax()) == 2 and scores[2] > 0.9 and abs(float(scores[1])) < 0.1
    c = concept_from_examples(
        acts, mask, positive, "thing", "m", "layer2", torch.ones(4), k=1, gain=2
    )
    assert c.units == [2] and c.values == pytest.approx([2 * float(inside[2])])
    with pytest.raises(ConceptError, match="with and without"):
        concept_from_examples(
            acts, mask, torch.ones(6, dtype=torch.bool), "t", "m", "l", torch.ones(4)
        )


def test_regions_and_masks():
    m = ellipse_mask("eyes", 64)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    ys, xs = np.nonzero(m)
    y0, x0, y1, x1 = FACE_REGIONS["eyes"]
    assert y0 * 64 <= ys.min() + 0.5 and ys.max() + 0.5 <= y1 * 64 and x0 * 64 <= xs.min() + 0.5
    b = box_mask("hair", 64)
    hy0, hx0, hy1, hx1 = (round(f * 64) for f in FACE_REGIONS["hair"])
    assert b[hy0:hy1, hx0:hx1].all() and b.sum() == (hy1 - hy0) * (hx1 - hx0)
    with pytest.raises(KeyError, match="known: hair"):
        ellipse_mask("knee", 64)


def test_every_shown_builtin_has_a_plain_name_ops_and_where():
    concepts = builtins()
    shown = [c for c in concepts if not c.hidden]
    assert {c.name for c in shown} == {"dark hair"}  # the menu
    for c in shown:
        assert not UNNAMED.match(c.name) and c.ops and c.where, c.name
        assert c.layer == "layer2" and c.values is not None and len(c.values) == len(c.units)
    for c in concepts:
        if UNNAMED.match(c.name):
            assert c.hidden, c.name


def test_hidden_concepts_left_out_of_listings_unless_all(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))
    hidden = {c.name for c in builtins() if c.hidden}
    assert hidden
    listed = concept_store.list_concepts("digiface-dcgan64")
    assert hidden.isdisjoint(c["name"] for c in listed)
    assert all(c["ops"] and set(c["ops"]) <= {"add", "remove"} for c in listed)
    every = concept_store.list_concepts("digiface-dcgan64", include_all=True)
    assert hidden <= {c["name"] for c in every}
    assert all(c["hidden"] for c in every if c["name"] in hidden)

    assert cli_main(["concept", "list", "--json"]) == 0
    names = {c["name"] for c in json.loads(capsys.readouterr().out)["concepts"]}
    assert names == {c["name"] for c in listed}
    assert cli_main(["concept", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in hidden) and "(hidden)" in out
    # still usable by name
    assert cli_main(["concept", "show", sorted(hidden)[0], "--json"]) == 0
    # The unknown-concept error (the server's, the CLI's) lists what menus offer and only
    # counts the hidden ones.
    with pytest.raises(ConceptError) as e:
        ConceptLibrary("digiface-dcgan64").get("no-such-concept")
    known = str(e.value).split("known: ", 1)[1]
    assert known.startswith(", ".join(c["name"] for c in listed))
    assert not any(name in known for name in hidden), known
    assert f"and {len(hidden)} hidden: `ganpaint concept list --all`" in known


@torch.no_grad()
def test_dark_hair_darkens_the_hair_of_gan_samples(dcgan):
    """The built-in does what its name says, on the generator itself: add makes the top of
    the face darker and the rest of the face barely moves. (Its remove lightens any hair, a
    dark one or not, so menus do not offer it: docs/performance.md, "A remove acts only
    where the concept is".)"""
    hair = next(c for c in builtins() if c.name == "dark hair")
    assert hair.ops == ["add"]
    units, values = hair.top("high")
    k = dcgan.index(hair.layer)
    r = dcgan.run(dcgan.sample_latent(16, torch.Generator().manual_seed(123)), 0, k + 1)
    m = torch.from_numpy(box_mask("hair", 64))[None, None]
    before = dcgan.run(r, k + 1).mean(dim=1)
    added = dcgan.run(apply_edit(r, m, units, torch.tensor(values)), k + 1).mean(dim=1)
    removed = dcgan.run(apply_edit(r, m, units, torch.zeros(len(units))), k + 1).mean(dim=1)
    top, lower = slice(0, 16), slice(40, 64)  # well inside / well outside the region
    assert float((added - before)[:, top].mean()) < -0.25  # darker by > 30 levels of 255
    assert float((removed - before)[:, top].mean()) > 0.02
    assert float((added - before)[:, lower].abs().mean()) < 0.05


def test_demo_shows_an_edit_you_can_see(tmp_path, fast_cfg):
    """`ganpaint demo`'s picture: before | after | changed, and the after is visibly
    different inside the selection (dark hair on light hair), identical outside."""
    from ganpaint.core.imageio import read_image
    from ganpaint.server.cli.demo import SIZE, demo_mask, run_demo

    info = run_demo(tmp_path / "demo.png", cfg=fast_cfg)
    assert info["edit"].startswith("add dark hair")
    picture = read_image(tmp_path / "demo.png")
    assert picture.shape == (SIZE, 3 * SIZE, 3)
    before, after = picture[:, :SIZE].astype(int), picture[:, SIZE : 2 * SIZE].astype(int)
    inside = demo_mask() > 0
    assert info["mean_abs_change_inside"] > 40  # of 255: seen at a glance
    assert (after - before).mean(axis=2)[inside].mean() < -40  # darker
    assert np.array_equal(after[~inside], before[~inside])
