"""The concept library: records, round trips, built-ins, corrupt files, crash safety, CLI."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ganpaint.core.concepts.files import atomic_write_json, dumps
from ganpaint.core.concepts.library import ConceptLibrary, builtin_dir
from ganpaint.core.concepts.published import EXCLUDED_UNITS, RANKINGS, published_concepts
from ganpaint.core.concepts.record import Concept, ConceptError
from ganpaint.server.cli import main as cli_main

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


def test_unknown_lists_known(dirs):
    with pytest.raises(ConceptError) as e:
        lib(dirs).get("door")
    assert str(e.value) == "unknown concept 'door' for test-model; known: tree, sky"


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
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ganpaint.core.concepts.library import ConceptLibrary
    sys.path.insert(0, sys.argv[3])
    from test_concepts_library import big_version

    lib = ConceptLibrary("test-model", user_dir=Path(sys.argv[1]), builtin_dir=Path(sys.argv[1]))
    i = int(sys.argv[2])
    while True:
        lib.replace_all(big_version(i))
        if i == int(sys.argv[2]):
            print("ready", flush=True)
        i += 1
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


def test_killed_writer_leaves_a_complete_file(tmp_path):
    """SIGKILL a process rewriting a big library, several times: at random moments, and
    right after its temporary file appears (mid-write). The file always parses and equals
    one complete version, and the next writer carries on."""
    rng = random.Random(1)
    lib_ = ConceptLibrary(MODEL, user_dir=tmp_path, builtin_dir=tmp_path)
    lib_.replace_all(big_version(0))
    assert lib_.user_path.stat().st_size > 500_000
    start, seen, mid_write = 1, set(), 0
    tmp_glob = f".{MODEL}.json.*.tmp"
    for round_ in range(6):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(start), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
        )
        try:
            assert p.stdout.readline().strip() == b"ready"
            if round_ % 2:  # wait for a write in progress
                deadline = time.monotonic() + 20
                while not list(tmp_path.glob(tmp_glob)) and time.monotonic() < deadline:
                    pass
            else:
                time.sleep(rng.uniform(0.0, 0.4))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        mid_write += bool(list(tmp_path.glob(tmp_glob)))
        data = json.loads(lib_.user_path.read_text(encoding="utf-8"))
        version = int(data["concepts"][0]["description"].split()[1])
        assert [Concept.from_dict(d) for d in data["concepts"]] == big_version(version)
        assert start <= version
        seen.add(version)
        start = version + 1
    assert len(seen) == 6
    assert mid_write >= 1  # some kills did land in the middle of a write
    # The next write (holding the lock) clears temporaries of killed writers.
    lib_.add(Concept("extra", MODEL, "layer4", [1], [1.0], "learned"))
    assert not list(tmp_path.glob(tmp_glob))
    assert lib_.get("extra").units == [1] and len(lib_.names()) == 1501


# -- shipped data ------------------------------------------------------------------------------
def test_published_churchoutdoor_builtins():
    lib_ = ConceptLibrary("progan-churchoutdoor", user_dir=Path("/nonexistent/never-written"))
    got = {c.name: c for c in lib_.builtins()}
    assert list(got) == ["tree", "grass", "door", "sky", "cloud", "brick", "dome"]
    assert got == {c.name: c for c in published_concepts()}
    for name, ranked in RANKINGS.items():
        c = got[name]
        assert c.units == [u for u in ranked if u != 418] and 418 not in c.units
        assert c.excluded == ([418] if 418 in ranked else [])
        assert c.layer == "layer4" and c.source == "published" and c.values is None
    assert EXCLUDED_UNITS == (418,)
    assert RANKINGS["sky"][:3] == (257, 302, 375) and RANKINGS["dome"][-1] == 430


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
    assert info["model"] == "digiface-dcgan64" and len(info["concepts"]) >= 5
    assert all(c["origin"] == "built-in" for c in info["concepts"])

    code, out, _ = run_cli(capsys, "list", "--model", "progan-churchoutdoor")
    assert code == 0 and out.split()[0] == "tree" and "14 units" in out
    code, out, _ = run_cli(capsys, "show", "tree", "--model", "progan-churchoutdoor")
    assert code == 0 and "excluded: 418" in out and "0.99 quantiles" in out
    code, out, _ = run_cli(capsys, "show", "door", "--model", "progan-churchoutdoor", "--json")
    assert json.loads(out)["units"][:3] == [279, 300, 443]

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
