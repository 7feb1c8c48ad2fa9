"""The `ganpaint` command as scripts call it: JSON out, one clear line on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from samples import make_mask, make_photo

from ganpaint.core.imageio import read_image, write_image
from ganpaint.core.metrics import detail_ratio, psnr_photo

FAST = ["--steps", "5", "--invert-steps", "8", "--quiet"]


def ganpaint(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ganpaint.server.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_image(d / "photo.png", make_photo(300, 400))
    write_image(d / "mask.png", make_mask(300, 400, (100, 150, 180, 250))[..., None])
    write_image(d / "empty.png", np.zeros((300, 400, 1), np.uint8))
    write_image(d / "small.png", np.zeros((30, 40, 1), np.uint8))
    (d / "broken.tar").write_bytes(b"\0" * 100)
    return d


def test_models_json():
    r = ganpaint("models", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["default"] == "digiface-dcgan64"
    assert {"digiface-dcgan64", "progan-churchoutdoor"} <= {m["id"] for m in info["models"]}


def test_edit_json_and_output(files):
    out = files / "out.png"
    r = ganpaint(
        "edit",
        files / "photo.png",
        "--mask",
        files / "mask.png",
        "-o",
        out,
        "--units",
        "3,17,42",
        "--op",
        "add",
        "--json",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) >= {"model", "steps", "seconds", "psnr_keep", "output"}
    assert info["model"] == "digiface-dcgan64" and info["steps"] == 5
    assert info["output"] == str(out)
    photo, result = read_image(files / "photo.png"), read_image(out)
    mask = read_image(files / "mask.png")[..., 0]
    assert np.array_equal(result[mask == 0], photo[mask == 0])
    assert (result[mask == 255] != photo[mask == 255]).any()
    # Photo-resolution numbers next to psnr_keep, as metrics computes them on the files.
    sel = mask >= 128
    assert info["detail_ratio"] == pytest.approx(detail_ratio(result, photo, sel), abs=2e-3)
    assert info["psnr_inside"] == pytest.approx(psnr_photo(result, photo, sel), abs=2e-3)
    assert info["edge_gradient_ratio"] > 0 and 0 <= info["replaced_fraction"] <= 1


def test_reconstruct_json(files):
    r = ganpaint("reconstruct", files / "photo.png", "-o", files / "rec.png", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["psnr_keep"] > 0 and "psnr_inversion" in info
    assert read_image(files / "rec.png").shape == (300, 400, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mask", "{d}/missing.png"], "no such image"),
        (["--mask", "{d}/small.png"], "mask size 40×30 differs from image size 400×300"),
        (["--mask", "{d}/empty.png"], "mask is empty"),
        (["--mask", "{d}/mask.png", "--model", "nope"], "unknown model 'nope'"),
        (["--mask", "{d}/mask.png", "--units", "3,999"], "unit indices [999] out of range"),
        (["--mask", "{d}/mask.png", "--units", "a,b"], "comma-separated integers"),
        (["--mask", "{d}/mask.png", "--checkpoint", "{d}/broken.tar"], "cannot read checkpoint"),
        (["--mask", "{d}/mask.png", "--concept", "no-such-concept"], "no-such-concept"),
    ],
)
def test_bad_input_exits_with_one_line(files, extra, message):
    args = [a.format(d=files) for a in extra]
    if "--units" not in args and "--concept" not in args:
        args += ["--units", "1"]
    r = ganpaint("edit", files / "photo.png", "-o", files / "x.png", "--op", "add", *args, *FAST)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (files / "x.png").exists()


def test_missing_image(files):
    r = ganpaint("reconstruct", files / "nope.jpg", "-o", files / "y.png", *FAST)
    assert (
        r.returncode != 0
        and r.stderr.strip() == f"ganpaint: error: no such image: {files}/nope.jpg"
    )


def test_bench_compares_fast_with_faithful(tmp_path):
    out = tmp_path / "bench.json"
    r = ganpaint(
        "bench", "--models", "dcgan", "--ref-steps", "20", "--base-steps", "20", "--json", out
    )
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(out.read_text())
    ref, fast = res["rows"]
    assert ref["steps"] == 20 and 0 < fast["steps"] <= 300
    assert res["speedup"] == pytest.approx(ref["seconds"] / fast["seconds"])
    assert fast["psnr_keep"] > 15 and fast["psnr_vs_ref"] > 15  # a real fit, not noise
    assert "speed-up fast vs faithful" in r.stdout


def test_edit_concept_default_strength_and_leave_out(files, tmp_path):
    """No --strength: the concept's default, else high (the GANPaint demo's 15 units);
    --leave-out skips ranked units and the next ones move up. --json says what was used."""
    import os

    from ganpaint.core.concepts import ConceptLibrary

    env = {**os.environ, "GANPAINT_DATA": str(tmp_path / "data")}
    c = ConceptLibrary("digiface-dcgan64", user_dir=tmp_path / "data" / "concepts").list()[0]
    want = c.default_strength or "high"
    n = min(c.strengths[want], len(c.units) - 1)
    cmd = [sys.executable, "-m", "ganpaint.server.cli", "edit", str(files / "photo.png")]
    cmd += ["--mask", str(files / "mask.png"), "-o", str(tmp_path / "o.png"), "--op", "add"]
    cmd += ["--concept", c.name, "--leave-out", str(c.units[0]), "--json", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["strength"] == want and info["units"] == c.units[1 : n + 1]
    cmd[cmd.index("--leave-out") : cmd.index("--leave-out") + 2] = ["--leave-out", "x"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "--leave-out must be comma-separated" in r.stderr


def test_invert_precision_flags_reach_the_inversion_config():
    from ganpaint.server.cli.main import build_parser, fit_config
    from ganpaint.server.cli.serve import config_from_args

    parse = build_parser().parse_args
    edit = ["edit", "p.png", "--mask", "m.png", "-o", "o.png", "--units", "1", "--op", "add"]
    assert fit_config(parse(edit)).invert.precision == "auto"
    assert fit_config(parse([*edit, "--invert-precision", "bf16"])).invert.precision == "bf16"
    assert config_from_args(parse(["serve"])).invert_precision == "auto"
    assert (
        config_from_args(parse(["serve", "--invert-precision", "fp32"])).invert_precision == "fp32"
    )
    r = ganpaint(*edit, "--invert-precision", "fp16")
    assert r.returncode == 2 and "invalid choice: 'fp16'" in r.stderr
