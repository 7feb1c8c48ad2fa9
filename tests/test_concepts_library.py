"""The concept library: records, round trips, built-ins, corrupt files, crash safety, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ganpaint.core.concepts.files import atomic_write_json, dumps
from ganpaint.core.concepts.library import ConceptLibrary, builtin_dir
from ganpaint.core.concepts.published import (
    RANKED_BY,
    RANKINGS,
    SUGGESTED_LEAVE_OUT,
    published_concepts,
)
from ganpaint.core.concepts.quantiles import on_values, published_table, values_source
from ganpaint.core.concepts.record import Concept, ConceptError
from ganpaint.server.cli.main import main as cli_main

MODEL = "test-model"


def concept(name: str, units=(3, 1, 4, 15, 9, 2, 6), source="learned", model=MODEL, **kw):
    return Concept(
        name=name,
        model=model,
        layer="layer2",
        units=list(units),
        values=kw.pop("values", [float(u) / 10 for u in units]),
        source=source,
        **kw,
    )


@pytest.fixture
def dirs(tmp_path):
    """A user folder and a built-in folder holding two built-ins for MODEL."""
    user, builtin = tmp_path / "user", tmp_path / "builtin"
    builtin.mkdir()
    atomic_write_json(
        builtin / f"{MODEL}.json",
        {
            "format": "ganpaint-concepts",
            "version": 1,
            "model": MODEL,
            "concepts": [
                concept("tree", source="published", values=None).to_dict(),
                concept("sky", (7, 8, 9), source="discovered").to_dict(),
            ],
        },
    )
    return user, builtin


def lib(dirs, **kw) -> ConceptLibrary:
    return ConceptLibrary(MODEL, user_dir=dirs[0], builtin_dir=dirs[1], **kw)


# -- the record ----------------------------------------------------------------------------
def test_top_by_strength():
    c = concept("x", range(20))
    units, values = c.top("low")
    assert units == [0, 1, 2, 3] and values == [0.0, 0.1, 0.2, 0.3]
    assert len(c.top("med")[0]) == 10 and len(c.top("high")[0]) == 15
    assert len(c.top(7)[0]) == 7
    short = concept("y", (5, 6))
    assert short.top("high") == ([5, 6], [0.5, 0.6])
    assert concept("z", values=None).top("low")[1] is None
    custom = concept("w", range(20), strengths={"low": 2, "med": 5, "high": 8})
    assert len(custom.top("high")[0]) == 8
    with pytest.raises(ConceptError, match="unknown strength 'huge'; known: low, med, high"):
        c.top("huge")


def test_default_strength_is_the_demos_largest_unless_the_concept_says():
    c = concept("x", range(20))
    assert c.brush() == "high" and c.top() == c.top("high") and len(c.top()[0]) == 15
    own = concept("y", range(20), default_strength="low")
    assert own.brush() == "low" and len(own.top()[0]) == 4 and len(own.top("med")[0]) == 10
    assert Concept.from_dict(json.loads(json.dumps(own.to_dict()))) == own
    assert "default_strength" not in c.to_dict()  # unset: not written
    with pytest.raises(ConceptError, match="default strength 'huge'"):
        concept("z", default_strength="huge")
    odd = concept("w", range(20), strengths={"a": 2, "b": 6})  # no "high": the largest
    assert odd.brush() == "b" and len(odd.top()[0]) == 6


def test_leave_out_skips_ranked_units_and_keeps_the_count():
    c = concept("x", (119, 125, 157, 195, 365, 374, 418, 426), values=None)
    assert c.top(7)[0] == [119, 125, 157, 195, 365, 374, 418]  # the reference: as ranked
    units, values = c.top(7, leave_out=[418])
    assert units == [119, 125, 157, 195, 365, 374, 426] and values is None
    v = concept("v", (3, 418, 5), values=[0.3, 76.0, 0.5])
    assert v.top("low", leave_out=(418,)) == ([3, 5], [0.3, 0.5])


def test_record_validation_and_round_trip():
    c = concept("hair", scores=[1.0] * 7, excluded=[418], description="from one example")
    again = Concept.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    for bad in (
        {"name": "a/b"},
        {"name": ""},
        {"units": []},
        {"units": [1, 1]},
        {"units": [-1]},
        {"values": [1.0]},
        {"values": [float("nan")] * 7},
        {"values": [1e39] * 7},  # a finite double that overflows float32 to inf
        {"values": [2e4] * 7},  # no layer's activation: a broken or hostile file
        {"source": "guessed"},
    ):
        d = {**c.to_dict(), **bad}
        with pytest.raises(ConceptError) as e:
            Concept.from_dict(d)
        assert "\n" not in str(e.value)
    with pytest.raises(ConceptError, match="lacks field"):
        Concept.from_dict({"name": "x"})


# -- round trips -----------------------------------------------------------------------------
def test_save_list_rename_delete(dirs):
    lib_ = lib(dirs)
    assert lib_.names() == ["tree", "sky"]
    lib_.add(concept("hair"))
    assert lib_.names() == ["tree", "sky", "hair"]
    assert lib(dirs).get("hair") == concept("hair", created=lib_.get("hair").created)
    with pytest.raises(ConceptError, match="already exists"):
        lib_.add(concept("hair"))
    lib_.add(concept("hair", (1, 2)), replace=True)
    assert lib_.get("hair").units == [1, 2]

    lib_.rename("hair", "fur")
    assert "hair" not in lib_.names() and lib_.get("fur").units == [1, 2]
    with pytest.raises(ConceptError, match="already exists"):
        lib_.rename("fur", "tree")
    with pytest.raises(ConceptError, match="bad concept name"):
        lib_.rename("fur", "../evil")
    lib_.delete("fur")
    assert lib_.names() == ["tree", "sky"]
    with pytest.raises(ConceptError) as e:
        lib_.get("fur")
    assert str(e.value) == "unknown concept 'fur' for test-model; known: tree, sky"


def test_builtins_hide_restore_shadow(dirs):
    lib_ = lib(dirs)
    assert lib_.source_of("tree") == "built-in"
    lib_.delete("tree")  # a built-in is hidden, not deleted
    assert lib_.names() == ["sky"]
    assert [c.name for c in lib_.list(include_hidden=True)] == ["tree", "sky"]
    lib_.restore("tree")
    assert lib_.names() == ["tree", "sky"]
    lib_.rename("sky", "heaven")  # a built-in renamed: a user copy, the original hidden
    assert lib_.names() == ["tree", "heaven"]
    assert lib_.get("heaven").units == [7, 8, 9] and lib_.source_of("heaven") == "user"
    lib_.add(concept("tree", (11, 12)), replace=True)  # shadows the built-in
    assert lib_.get("tree").units == [11, 12] and lib_.names() == ["heaven", "tree"]
    lib_.delete("tree")  # the user one goes, and the built-in stays out of sight
    assert lib_.names() == ["heaven"]
    with pytest.raises(ConceptError, match="not a built-in"):
        lib_.restore("heaven")


def test_export_import(dirs, tmp_path):
    a = lib(dirs)
    a.add(concept("hair"))
    a.add(concept("hat", (20, 21)))
    out = tmp_path / "share.json"
    assert a.export(out, ["hair", "hat"]) == ["hair", "hat"]
    other_user = tmp_path / "other"
    b = ConceptLibrary(MODEL, user_dir=other_user, builtin_dir=dirs[1])
    assert b.import_file(out) == ["hair", "hat"]
    assert b.get("hat") == a.get("hat")
    with pytest.raises(ConceptError, match="already exist: hair, hat"):
        b.import_file(out)
    assert b.import_file(out, replace=True) == ["hair", "hat"]
    wrong = ConceptLibrary("another-model", user_dir=other_user, builtin_dir=dirs[1])
    with pytest.raises(ConceptError, match="belongs to model 'test-model'"):
        wrong.import_file(out)
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(ConceptError, match="cannot read"):
        b.import_file(tmp_path / "junk.json")
    assert (tmp_path / "junk.json").read_text() == "{nope"  # the user's file is left alone
    with pytest.raises(ConceptError, match="no such file"):
        b.import_file(tmp_path / "missing.json")


def test_impossible_concepts_are_not_imported(tmp_path):
    """For a registered model the importer knows the layers (from the architecture, no
    weights): out-of-range units, unknown layers and overflowing values are refused, and
    nothing of the file is imported."""
    model = "digiface-dcgan64"
    target = ConceptLibrary(model, user_dir=tmp_path / "user", builtin_dir=tmp_path)
    good = concept("fine", (1, 2), model=model).to_dict()
    for bad, says in [
        ({"values": [1e39, 1e39]}, "within"),
        ({"units": [999999], "values": [1.0]}, "out of range: layer layer2 has units 0..255"),
        ({"units": [999999], "values": None}, "out of range"),
        ({"layer": "../../etc/passwd"}, "has no layer '../../etc/passwd'"),
    ]:
        path = tmp_path / "share.json"
        atomic_write_json(
            path,
            {
                "format": "ganpaint-concepts",
                "version": 1,
                "model": model,
                "concepts": [good, {**good, "name": "bad", **bad}],
            },
        )
        with pytest.raises(ConceptError, match=re.escape(says)):
            target.import_file(path)
        assert not target.user_path.exists()  # all or nothing
    atomic_write_json(
        path, {"format": "ganpaint-concepts", "version": 1, "model": model, "concepts": [good]}
    )
    assert target.import_file(path) == ["fine"]


def test_with_the_generator_concepts_are_checked_against_its_layers(tmp_path):
    """What import cannot see (a file written by hand, a model not registered) is caught
    when the concept is used with the loaded generator: a ConceptError, never a crash."""
    from ganpaint.core.generators import load_model

    model = "digiface-dcgan64"
    gen = load_model(model, "cpu")
    lib_ = ConceptLibrary(model, user_dir=tmp_path, builtin_dir=tmp_path, generator=gen)
    atomic_write_json(
        lib_.user_path,
        {
            "format": "ganpaint-concepts",
            "version": 1,
            "model": model,
            "concepts": [
                concept("ok", (1, 2), model=model, values=[1.0, 2.0]).to_dict(),
                concept("quantiles", (1, 2), model=model, values=None).to_dict(),
                {**concept("layer", model=model).to_dict(), "layer": "../../etc/passwd"},
                {**concept("unit", model=model, values=None).to_dict(), "units": [999999]},
                concept("huge", (1, 2), model=model, values=[9000.0, 9000.0]).to_dict(),
            ],
        },
    )
    assert lib_.get("ok").values == [1.0, 2.0]
    assert len(lib_.get("quantiles").values) == 2
    for name, says in [("layer", "has no layer"), ("unit", "out of range"), ("huge", "far")]:
        with pytest.raises(ConceptError, match=says):
            lib_.get(name)


def test_unknown_lists_known(dirs):
    with pytest.raises(ConceptError) as e:
        lib(dirs).get("door")
    assert str(e.value) == "unknown concept 'door' for test-model; known: tree, sky"


def test_unknown_lists_only_what_menus_offer(dirs):
    """Unnamed (hidden) concepts stay usable by name, but the unknown-concept error lists
    only the named ones, as menus and `concept list` do, and says how to see the others."""
    lib_ = lib(dirs)
    lib_.add(concept("group-07", hidden=True))
    assert lib_.get("group-07").hidden
    expected = (
        "unknown concept '{}' for test-model; known: {} "
        "(and 1 hidden: `ganpaint concept list --all`)"
    )
    with pytest.raises(ConceptError) as e:
        lib_.get("door")
    assert str(e.value) == expected.format("door", "tree, sky")
    with pytest.raises(ConceptError) as e:
        lib_.delete("door")
    assert str(e.value) == expected.format("door", "sky, tree")


def test_generator_of_another_model_is_refused(dirs):
    class Other:
        model_id = "other"

    with pytest.raises(ConceptError, match="given a generator of 'other'"):
        lib(dirs, generator=Other())


# -- corrupt files ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b'{"format": "ganpaint-concepts", "version": 1, "mod',  # cut short
        b"\xff\xfe not utf-8",
        json.dumps(
            {
                "format": "ganpaint-concepts",
                "version": 1,
                "model": MODEL,
                "concepts": [
                    {
                        "name": "x",
                        "model": MODEL,
                        "layer": "l",
                        "units": "oops",
                        "source": "learned",
                    }
                ],
            }
        ).encode(),
    ],
)
def test_corrupt_file_is_reported_and_kept_aside(dirs, content):
    problems = []
    lib_ = lib(dirs, on_problem=problems.append)
    lib_.user_path.parent.mkdir(parents=True)
    lib_.user_path.write_bytes(content)
    assert lib_.names() == ["tree", "sky"]  # the built-ins still work
    assert len(problems) == 1 and "corrupt" in problems[0] and "\n" not in problems[0]
    aside = list(lib_.user_path.parent.glob(f"{MODEL}.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert aside[0].name in problems[0]
    lib_.add(concept("hair"))  # a fresh file; the corrupt one stays
    assert lib_.names() == ["tree", "sky", "hair"] and aside[0].read_bytes() == content
    assert len(problems) == 1


def test_newer_format_is_refused_not_moved(dirs):
    lib_ = lib(dirs)
    lib_.user_path.parent.mkdir(parents=True)
    data = {"format": "ganpaint-concepts", "version": 99, "model": MODEL, "concepts": []}
    lib_.user_path.write_text(json.dumps(data))
    with pytest.raises(ConceptError, match="newer"):
        lib_.names()
    assert lib_.user_path.exists()


# -- crash safety ----------------------------------------------------------------------------
# A writer that kills itself (SIGKILL, no clean-up of any kind) at one chosen point inside
# the atomic write: while writing the temporary file (half of it written), before its
# fsync, before the rename, after the rename (before the folder's fsync).
KILL_POINTS = ("mid-write", "before-fsync", "before-rename", "after-rename")
WRITER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from ganpaint.core.concepts.library import ConceptLibrary
    from ganpaint.core.concepts.record import Concept

    new = [Concept.from_dict(d) for d in json.loads(Path(sys.argv[2]).read_text())]
    point, real_fdopen, real_fsync, real_replace = sys.argv[3], os.fdopen, os.fsync, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfWriter:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            die()
        def __getattr__(self, name):
            return getattr(self.f, name)

    def fdopen(*a, **k):
        f = real_fdopen(*a, **k)
        return HalfWriter(f) if point == "mid-write" else f

    def fsync(fd):
        if point == "before-fsync":
            die()
        real_fsync(fd)

    def replace(src, dst):
        if point == "before-rename":
            die()
        real_replace(src, dst)
        if point == "after-rename":
            die()

    os.fdopen, os.fsync, os.replace = fdopen, fsync, replace
    lib = ConceptLibrary("test-model", user_dir=Path(sys.argv[1]), builtin_dir=Path(sys.argv[1]))
    lib.replace_all(new)
    print("not killed", flush=True)
    """
)


def big_version(i: int) -> list[Concept]:
    """Version i of a ~1 MB library: 1500 concepts whose units and values depend on i."""
    return [
        Concept(
            name=f"c{j:04d}",
            model=MODEL,
            layer="layer4",
            units=[(i * 7 + j * 13 + k * 31) % 512 for k in range(15)],
            values=[round(((i + j + k) % 97) / 7.0, 4) for k in range(15)],
            source="learned",
            created="2024-01-01T00:00:00Z",
            description=f"version {i}",
        )
        for j in range(1500)
    ]


def test_a_writer_killed_inside_the_atomic_write_leaves_a_complete_file(tmp_path):
    """SIGKILL lands at a known point of the write, every time (one child per point, run
    side by side). Before the rename the old version stays (with an orphaned temporary
    file); after it, the new one; never a mix. The next writer, holding the lock, clears
    the orphan and carries on."""
    version_1 = tmp_path / "version-1.json"
    version_1.write_text(json.dumps([c.to_dict() for c in big_version(1)]))
    tmp_glob = f".{MODEL}.json.*.tmp"
    children = {}
    for point in KILL_POINTS:
        folder = tmp_path / point
        ConceptLibrary(MODEL, user_dir=folder, builtin_dir=folder).replace_all(big_version(0))
        children[point] = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(version_1), point],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # The installed package only: the test process's sys.path can hold
            # plugin/ganpaint (the plug-in's tests), whose ganpaint.py would shadow it.
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    for point, p in children.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == -signal.SIGKILL, (point, err.decode()[-2000:])
        assert b"not killed" not in out
        folder = tmp_path / point
        lib_ = ConceptLibrary(MODEL, user_dir=folder, builtin_dir=folder)
        orphans = list(folder.glob(tmp_glob))
        renamed = point == "after-rename"
        assert bool(orphans) != renamed, point  # killed before the rename: its temp file stays
        if point == "mid-write":  # really half written
            assert 0 < orphans[0].stat().st_size < lib_.user_path.stat().st_size
        data = json.loads(lib_.user_path.read_text(encoding="utf-8"))
        assert [Concept.from_dict(d) for d in data["concepts"]] == big_version(int(renamed))
        lib_.add(Concept("extra", MODEL, "layer4", [1], [1.0], "learned"))
        assert not list(folder.glob(tmp_glob))
        assert lib_.get("extra").units == [1] and len(lib_.names()) == 1501


# -- shipped data ------------------------------------------------------------------------------
def test_published_churchoutdoor_builtins():
    lib_ = ConceptLibrary("progan-churchoutdoor", user_dir=Path("/nonexistent/never-written"))
    got = {c.name: c for c in lib_.builtins()}
    assert list(got) == ["tree", "grass", "door", "sky", "cloud", "brick", "dome"]
    assert got == {c.name: c for c in published_concepts()}
    for name, ranked in RANKINGS.items():
        c = got[name]
        # As the demo: the lists as they stand, unit 418 included, nothing excluded.
        assert c.units == list(ranked) and c.excluded == [] and len(c.units) == 15
        assert c.layer == "layer4" and c.source == "published" and c.values is None
        how = "causal-effect (ACE)" if name in ("tree", "grass", "door") else "IoU"
        assert RANKED_BY[name] in c.description and how in c.description
        assert ("418" in c.description) == (418 in ranked)
    assert [n for n, r in RANKINGS.items() if 418 in r] == ["tree", "grass", "door"]
    assert SUGGESTED_LEAVE_OUT == (418,)
    assert RANKINGS["sky"][:3] == (257, 302, 375) and RANKINGS["dome"][-1] == 430


def test_churchoutdoor_uses_the_published_on_values():
    """The demo's levels_demo.json (every layer4 unit's 0.99 quantile) fills in the built-ins
    without a generator; every other model keeps the sampled estimate."""
    table = published_table("progan-churchoutdoor", "layer4")
    assert table is not None and len(table["values"]) == 512
    assert "levels_demo.json" in table["source"] and table["quantile"] == 0.99
    lib_ = ConceptLibrary("progan-churchoutdoor", user_dir=Path("/nonexistent/never-written"))
    tree = lib_.get("tree")
    assert tree.values == [table["values"][u] for u in tree.units]
    # Spot values quoted from the demo file (method.md): unit 119, 257, and 418.
    assert tree.values[0] == pytest.approx(8.01758) and tree.values[6] == pytest.approx(76.1622)
    assert lib_.get("sky").values[0] == pytest.approx(9.976, abs=1e-3)
    assert all(c.values is not None for c in lib_.list())
    src = lib_.values_source("tree")
    assert src["kind"] == "published" and "levels_demo.json" in src["source"]
    assert values_source("progan-bedroom", "layer4")["kind"] == "sampled"
    assert published_table("progan-bedroom", "layer4") is None
    assert published_table("progan-churchoutdoor", "layer5") is None
    assert published_table("progan-churchoutdoor", "layer4", q=0.9) is None


def test_published_on_values_are_the_models_on_values():
    """quantiles.on_values gives the table for churchoutdoor layer4 (no sampling) and samples
    for any other layer or model."""
    import torch

    from ganpaint.core.generators.progan import ProGAN256

    gen = ProGAN256("progan-churchoutdoor")
    table = on_values(gen, "layer4", cache=False)
    assert table.shape == (512,) and float(table[418]) == pytest.approx(76.162216)
    assert float(table[119]) == pytest.approx(8.01758)
    sampled = on_values(gen, "layer2", n_samples=4, cache=False)  # no table: sampled
    assert sampled.shape == (512,) and not torch.allclose(sampled, table)
    estimate = on_values(gen, "layer4", n_samples=4, cache=False, published=False)
    assert estimate.shape == (512,) and not torch.allclose(estimate, table)


def test_default_model_starter_set():
    path = builtin_dir() / "digiface-dcgan64.json"
    text = path.read_text(encoding="utf-8")
    assert text == dumps(json.loads(text)) + "\n"  # written by the script, untouched
    lib_ = ConceptLibrary("digiface-dcgan64", user_dir=Path("/nonexistent/never-written"))
    concepts = lib_.builtins()
    discovered = [c for c in concepts if c.source == "discovered"]
    assert len(discovered) >= 8
    units = [u for c in discovered for u in c.units]
    assert len(units) == len(set(units)) and max(units) < 256  # a partition of layer2
    assert {c.source for c in concepts} == {"discovered", "learned"}
    for c in concepts:
        assert c.layer == "layer2" and c.values is not None
        assert len(c.top("high")[0]) == min(15, len(c.units))


# -- the command line --------------------------------------------------------------------------
def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["concept", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_library_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))
    code, out, _ = run_cli(capsys, "list", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["model"] == "digiface-dcgan64" and len(info["concepts"]) >= 1
    assert all(c["origin"] == "built-in" for c in info["concepts"])

    code, out, _ = run_cli(capsys, "list", "--model", "progan-churchoutdoor")
    assert code == 0 and out.split()[0] == "tree" and "15 units" in out
    code, out, _ = run_cli(capsys, "show", "tree", "--model", "progan-churchoutdoor")
    assert code == 0 and "published 0.99 quantiles" in out and "levels_demo.json" in out
    assert "8.018" in out and "76.16" in out and "(default high)" in out
    code, out, _ = run_cli(capsys, "show", "door", "--model", "progan-churchoutdoor", "--json")
    door = json.loads(out)
    assert door["units"][:4] == [279, 300, 443, 418]
    assert door["values"][3] == pytest.approx(76.1622) and len(door["values"]) == 15
    assert door["values_source"]["kind"] == "published" and door["default_strength"] == "high"
    assert "levels_demo.json" in door["values_source"]["source"]

    code, _, err = run_cli(capsys, "show", "window", "--model", "progan-churchoutdoor")
    assert code == 2
    assert err.strip() == (
        "ganpaint: error: unknown concept 'window' for progan-churchoutdoor; "
        "known: tree, grass, door, sky, cloud, brick, dome"
    )
    code, _, err = run_cli(capsys, "list", "--model", "nope")
    assert code == 2 and "unknown model 'nope'" in err

    m = ["--model", "progan-churchoutdoor"]
    assert run_cli(capsys, "rename", "tree", "forest", *m)[0] == 0
    assert run_cli(capsys, "delete", "dome", *m)[0] == 0
    code, out, _ = run_cli(capsys, "list", "--json", *m)
    names = [c["name"] for c in json.loads(out)["concepts"]]
    assert names == ["grass", "door", "sky", "cloud", "brick", "forest"]
    export = tmp_path / "mine.json"
    assert run_cli(capsys, "export", "forest", "-o", export, *m)[0] == 0
    assert run_cli(capsys, "delete", "forest", *m)[0] == 0
    code, out, _ = run_cli(capsys, "import", export, *m)
    assert code == 0 and "forest" in out
    code, _, err = run_cli(capsys, "import", export, *m)
    assert code == 2 and "already exist: forest" in err
    assert run_cli(capsys, "restore", "dome", *m)[0] == 0
    code, out, _ = run_cli(capsys, "list", "--all", *m)
    assert "dome" in out and "tree" in out and "(hidden)" in out

    user_file = tmp_path / "data" / "concepts" / "progan-churchoutdoor.json"
    user_file.write_text("garbage")
    code, out, err = run_cli(capsys, "list", *m)
    assert code == 0 and "warning" in err and "corrupt" in err and "dome" in out
    assert len(list(user_file.parent.glob("*.corrupt-*"))) == 1


def test_cli_learn_and_discover_on_default_model(tmp_path, monkeypatch, capsys):
    """The real default model, few steps: commands work end to end and save concepts."""
    import numpy as np

    from ganpaint.core.imageio import write_image

    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "cache"))
    yy, xx = np.mgrid[0:96, 0:96]
    photo = np.stack([128 + 60 * np.sin(xx / 9.0), 100 + 0 * xx, 128 + 60 * np.cos(yy / 7.0)], 2)
    write_image(tmp_path / "p.png", photo.astype(np.uint8))
    mask = np.zeros((96, 96, 1), np.uint8)
    mask[10:40, 20:70] = 255
    write_image(tmp_path / "m.png", mask)
    code, out, err = run_cli(
        capsys,
        "learn",
        tmp_path / "p.png",
        "--mask",
        tmp_path / "m.png",
        "--name",
        "stripes",
        "--invert-steps",
        "8",
        "--quiet",
        "--json",
    )
    assert code == 0, err
    learned = json.loads(out)
    assert learned["source"] == "learned" and len(learned["units"]) == 15
    code, out, _ = run_cli(capsys, "show", "stripes", "--json")
    assert json.loads(out)["origin"] == "user"
    code, _, err = run_cli(
        capsys,
        "learn",
        tmp_path / "p.png",
        "--mask",
        tmp_path / "m.png",
        "--name",
        "stripes",
        "--quiet",
    )
    assert code == 2 and "already exists" in err

    sheet = tmp_path / "sheet.png"
    code, out, err = run_cli(
        capsys,
        "discover",
        "--groups",
        "3",
        "--samples",
        "48",
        "-o",
        sheet,
        "--prefix",
        "mine",
        "--quiet",
        "--json",
    )
    assert code == 0, err
    info = json.loads(out)
    assert [c["name"] for c in info["concepts"]] == ["mine-01", "mine-02", "mine-03"]
    assert sheet.stat().st_size > 1000
    code, out, _ = run_cli(capsys, "list")
    assert "mine-03" in out and "stripes" in out


def test_a_deeply_nested_file_is_a_bad_file(tmp_path, monkeypatch, capsys):
    """`[[[[…]]]]` deeper than the JSON parser goes: exit 2 and one line on import; in the
    user's library it is a corrupt file like any other (set aside, built-ins carry on)."""
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, out, err = run_cli(capsys, "import", deep)
    assert code == 2 and out == ""
    assert err.strip() == f"ganpaint: error: cannot read {deep}: nested too deeply"
    lib = ConceptLibrary(MODEL)
    lib.user_path.parent.mkdir(parents=True)
    lib.user_path.write_bytes(deep.read_bytes())
    problems: list[str] = []
    lib.on_problem = problems.append
    assert lib.user_concepts() == [] and "nested too deeply" in problems[0]


def test_the_library_is_bounded(tmp_path, monkeypatch):
    """A description or a where past MAX_TEXT, a file with more concepts than MAX_CONCEPTS
    or more bytes than MAX_FILE_BYTES: refused with a one-line reason, nothing imported; a
    library that would grow past either bound is not written."""
    from ganpaint.core.concepts import library, record

    lib = ConceptLibrary(MODEL, user_dir=tmp_path / "user", builtin_dir=tmp_path)
    share = tmp_path / "share.json"

    def offer(concepts: list[Concept]) -> None:
        lib_file = {"format": "ganpaint-concepts", "version": 1, "model": MODEL}
        atomic_write_json(share, {**lib_file, "concepts": [c.to_dict() for c in concepts]})

    long = "x" * (record.MAX_TEXT + 1)
    for field in ("description", "where"):
        with pytest.raises(ConceptError, match=f"its {field} has {len(long)} characters"):
            concept("wordy", **{field: long})
        offer([concept("fine")])
        data = json.loads(share.read_text())
        data["concepts"][0][field] = long
        share.write_text(json.dumps(data))
        with pytest.raises(ConceptError, match="more than the 4000 allowed"):
            lib.import_file(share)
    monkeypatch.setattr(library, "MAX_CONCEPTS", 3)
    offer([concept(f"c{i}") for i in range(4)])
    with pytest.raises(ConceptError, match="4 concepts, more than the 3 allowed"):
        lib.import_file(share)
    offer([concept(f"c{i}") for i in range(2)])
    assert lib.import_file(share) == ["c0", "c1"]
    offer([concept(f"d{i}") for i in range(2)])
    with pytest.raises(ConceptError, match="would have 4 concepts of your own"):
        lib.import_file(share)
    size = share.stat().st_size
    monkeypatch.setattr(library, "MAX_FILE_BYTES", size - 1)
    with pytest.raises(ConceptError, match="MiB allowed"):
        lib.import_file(share)
    monkeypatch.setattr(library, "MAX_FILE_BYTES", lib.user_path.stat().st_size + 10)
    with pytest.raises(ConceptError, match="would pass"):
        lib.add(concept("one-more"))
    assert [c.name for c in lib.user_concepts()] == ["c0", "c1"]
