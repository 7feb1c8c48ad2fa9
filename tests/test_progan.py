"""ProGAN-256: architecture, both published checkpoint layouts, broken files, download."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ganpaint.core import paths
from ganpaint.core.generators import ModelError, download, get_spec, load_model, model_specs
from ganpaint.core.generators.progan import (
    PROGAN_SPECS,
    ProGAN,
    ProGAN256,
    load_progan,
)

# Output channels of layer1 … layer14 (two per resolution 4, 8, …, 256), written out here
# rather than taken from the code under test.
CHANNELS = [512, 512, 512, 512, 512, 512, 256, 256, 128, 128, 64, 64, 32, 32]
PARAMS_256 = 18_344_995  # Σ C_out·C_in·k² + C_out over the 15 layers ("18.3 M")
PARAMS_1024 = 23_071_507  # Karras' CelebA-HQ generator ("23.1 M")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# -- checkpoints in the two published layouts -------------------------------------------
def random_published(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 256×256 state dict in the current layout with N(0, 1) weights (as under WScale)."""
    g = torch.Generator().manual_seed(seed)
    sd, cin = {}, 512
    for i, cout in enumerate(CHANNELS, start=1):
        k = 4 if i == 1 else 3
        sd[f"layer{i}.conv.weight"] = torch.randn(cout, cin, k, k, generator=g)
        sd[f"layer{i}.wscale.b"] = 0.1 * torch.randn(cout, generator=g)
        cin = cout
    sd["output_256x256.conv.weight"] = torch.randn(3, 32, 1, 1, generator=g)
    sd["output_256x256.wscale.b"] = 0.1 * torch.randn(3, generator=g)
    return sd


def to_old_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``layerN.*`` → ``features.{N-1}.*``, ``output_256x256.*`` → ``output.*``."""
    old = {}
    for key, value in sd.items():
        name, rest = key.split(".", 1)
        new = f"features.{int(name[5:]) - 1}" if name.startswith("layer") else "output"
        old[f"{new}.{rest}"] = value
    return old


def reference_forward(sd: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Straight from the layout description: conv, then ×(√2/k)/√C_in and + b."""
    x = z.view(z.shape[0], -1, 1, 1)
    for i in range(1, 15):
        w, b = sd[f"layer{i}.conv.weight"], sd[f"layer{i}.wscale.b"]
        x = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        if i >= 3 and i % 2 == 1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        k = w.shape[-1]
        x = F.conv2d(x, w, padding=3 if i == 1 else 1)
        x = x * (math.sqrt(2) / k / math.sqrt(w.shape[1])) + b.view(1, -1, 1, 1)
        x = F.leaky_relu(x, 0.2)
    x = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    w, b = sd["output_256x256.conv.weight"], sd["output_256x256.wscale.b"]
    return F.conv2d(x, w) / math.sqrt(w.shape[1]) + b.view(1, -1, 1, 1)


@pytest.fixture(scope="module")
def published() -> dict[str, torch.Tensor]:
    return random_published()


@pytest.fixture(scope="module")
def files(published, tmp_path_factory) -> dict[str, Path]:
    """The same weights saved as new layout (zip format) and old layout (legacy format,
    as the 2018-19 files were written)."""
    d = tmp_path_factory.mktemp("ckpt")
    new, old = d / "new_layout.pth", d / "old_layout.pth"
    torch.save(published, new)
    torch.save(to_old_layout(published), old, _use_new_zipfile_serialization=False)
    return {"new": new, "old": old}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the real user cache."""
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "cache"))


# -- registry and architecture ----------------------------------------------------------
def test_registry_lists_the_published_checkpoints():
    names = {
        "churchoutdoor",
        "bedroom",
        "kitchen",
        "livingroom",
        "diningroom",
        "conferenceroom",
        "restaurant",
        "celebhq",
    }
    assert set(PROGAN_SPECS) == {f"progan-{n}" for n in names}
    registered = {s.id for s in model_specs()}
    for spec in PROGAN_SPECS.values():
        assert spec.id in registered and get_spec(spec.id) == spec
        stem = spec.id.removeprefix("progan-")
        assert spec.file_name == f"proggan_{stem}-{spec.sha256_prefix}.pth"
        assert len(spec.sha256_prefix) == 8
        int(spec.sha256_prefix, 16)
        assert spec.url.endswith("/models/" + spec.file_name)
        # The newer host first; gandissect.csail.mit.edu (reported dead) stays as a fallback.
        assert [u.split("/")[2] for u in spec.urls] == [
            "dissect.csail.mit.edu",
            "gandissect.csail.mit.edu",
        ]
        assert spec.family == f"progan{spec.resolution}"
    church = PROGAN_SPECS["progan-churchoutdoor"]
    assert (church.resolution, church.sha256_prefix) == (256, "7e701dd5")


def test_architecture():
    gen = ProGAN256()
    assert sum(p.numel() for p in gen.parameters()) == PARAMS_256
    assert gen.layer_names == [f"layer{i}" for i in range(1, 15)] + ["output_256x256"]
    assert gen.n_layers == 15 and gen.default_split() == 10
    assert gen.edit_layer == "layer4" and gen.out_shape("layer4") == (512, 8, 8)
    assert gen.latent_shape == (512,) and gen.resolution == 256
    for i, c in enumerate(CHANNELS):
        assert gen.out_shape(i) == (c, 4 * 2 ** (i // 2), 4 * 2 ** (i // 2))
    big = ProGAN(resolution=1024)
    assert sum(p.numel() for p in big.parameters()) == PARAMS_1024
    assert big.n_layers == 19 and big.out_shape("layer4") == (512, 8, 8)


# -- loading ----------------------------------------------------------------------------
def test_both_layouts_load_to_identical_outputs(files, published):
    new = load_model("progan-churchoutdoor", device="cpu", checkpoint=files["new"])
    old = load_model("progan-churchoutdoor", device="cpu", checkpoint=files["old"])
    assert isinstance(new, ProGAN256) and new.model_id == "progan-churchoutdoor"
    assert not new.training and not any(p.requires_grad for p in new.parameters())
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_new, x_old = new(z), old(z)
        assert x_new.shape == (2, 3, 256, 256)
        assert torch.equal(x_new, x_old)
        torch.testing.assert_close(x_new, reference_forward(published, z), rtol=1e-4, atol=1e-4)
        # Layer by layer the shapes match out_shape, and any split composes to G(z).
        h = z
        for i in range(new.n_layers):
            h = new.run(h, i, i + 1)
            assert h.shape == (2, *new.out_shape(i))
        assert torch.equal(h, x_new)
        k = new.default_split()
        assert torch.equal(new.run(new.run(z, 0, k), k), x_new)


def _with_stored_scales(old: dict[str, torch.Tensor], factor: float = 1.0) -> dict:
    """The old layout as that model saved it: each WScale's scale stored as a [1] parameter
    (gain/√fan_in, computed here from the layout description), times ``factor``."""
    out = dict(old)
    for key, w in old.items():
        if key.endswith(".conv.weight"):
            gain = 1.0 if key.startswith("output.") else math.sqrt(2)
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            out[key.replace(".conv.weight", ".wscale.scale")] = torch.tensor(
                [factor * gain / math.sqrt(fan_in)]
            )
    return out


def test_old_layout_with_stored_wscale_scales_loads(published, tmp_path, caplog):
    """``features.{i}.wscale.scale`` (15 of them) are ignored and recomputed, as gandissect's
    loader does; a stored scale that disagrees is logged, never used."""
    ref = load_model("progan-churchoutdoor", device="cpu", checkpoint=_save(published, tmp_path))
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(3))
    old = _with_stored_scales(to_old_layout(published))
    assert sum(k.endswith(".wscale.scale") for k in old) == 15
    for factor, warned in ((1.0, False), (3.0, True)):
        path = tmp_path / f"scales-{factor}.pth"
        torch.save(_with_stored_scales(to_old_layout(published), factor), path)
        caplog.clear()
        with caplog.at_level("WARNING", logger="ganpaint.generators"):
            gen = load_model("progan-churchoutdoor", device="cpu", checkpoint=path)
        with torch.no_grad():
            assert torch.equal(gen(z), ref(z))
        assert any("wscale.scale" in r.getMessage() for r in caplog.records) == warned


def _save(sd: dict, folder: Path) -> Path:
    path = folder / "plain.pth"
    torch.save(sd, path)
    return path


def test_gradients_flow_through_g_f(files):
    """Inversion back-propagates from the image to the split features (in-place ops safe)."""
    gen = load_model("progan-churchoutdoor", device="cpu", checkpoint=files["new"])
    k = gen.default_split()
    with torch.no_grad():
        r = gen.run(torch.randn(1, 512), 0, k)
    r.requires_grad_(True)
    gen.run(r, k).square().mean().backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0


def test_nested_state_dict_loads(published, tmp_path):
    path = tmp_path / "nested.pth"
    torch.save({"state_dict": published}, path)
    gen = load_model("progan-bedroom", device="cpu", checkpoint=path)
    assert torch.equal(gen.layers[3].conv.weight, published["layer4.conv.weight"])


def _drop(sd, key):
    return {k: v for k, v in sd.items() if k != key}


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "truncated-legacy",
        "random",
        "empty",
        "missing",
        "shape",
        "unexpected",
        "resolution",
        "ints",
    ],
)
def test_broken_checkpoints_give_one_line_errors(case, files, published, tmp_path):
    path = tmp_path / f"{case}.pth"
    if case.startswith("truncated"):
        data = files["old" if case.endswith("legacy") else "new"].read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "random":
        path.write_bytes(os.urandom(4096))
    elif case == "empty":
        path.write_bytes(b"")
    else:
        sd = dict(published)
        if case == "missing":
            sd = _drop(sd, "layer7.wscale.b")
        elif case == "shape":
            sd["layer4.conv.weight"] = torch.zeros(512, 512, 4, 4)
        elif case == "unexpected":
            sd["layer4.extra"] = torch.zeros(1)
        elif case == "resolution":  # a 128×128 generator: layers 1–12 only
            sd = {k: v for k, v in sd.items() if not k.startswith(("layer13", "layer14"))}
        elif case == "ints":
            sd["layer2.wscale.b"] = torch.zeros(512, dtype=torch.int64)
        torch.save(sd, path)
    with pytest.raises(ModelError) as e:
        load_model("progan-kitchen", device="cpu", checkpoint=path)
    msg = one_line(e)
    assert path.name in msg
    expect = {
        "missing": "layer7.wscale.b",
        "shape": "layer4.conv.weight",
        "unexpected": "layer4.extra",
        "resolution": "128×128",
        "ints": "int64",
    }
    assert expect.get(case, "") in msg


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(ModelError) as e:
        load_model("progan-kitchen", device="cpu", checkpoint=tmp_path / "nope.pth")
    assert "nope.pth" in one_line(e)


# -- download into the cache ------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local_spec(*sources, prefix: str):
    """A registry entry whose published places are local (file:// or a 127.0.0.1 server)."""
    return dataclasses.replace(
        PROGAN_SPECS["progan-churchoutdoor"],
        id="progan-test",
        file_name=f"proggan_test-{prefix}.pth",
        urls=tuple(s.as_uri() if isinstance(s, Path) else s for s in sources),
        sha256_prefix=prefix,
    )


def _other_prefix(digest: str) -> str:
    return "0" * 8 if not digest.startswith("0" * 8) else "f" * 8


@pytest.fixture
def http_folder(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving a fresh folder: (folder, base URL, dead URL).
    The dead URL is a port that was free a moment ago (connection refused)."""
    import functools
    import socket
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/models/"
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/", dead
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_caches(files, tmp_path):
    source = tmp_path / "server" / "weights.pth"
    source.parent.mkdir()
    source.write_bytes(files["old"].read_bytes())
    spec = _local_spec(source, prefix=_sha256(source)[:8])
    gen = load_progan(spec)
    cached = paths.models_dir() / spec.file_name
    assert cached.is_file() and _sha256(cached) == _sha256(source)
    assert cached.parent == tmp_path / "cache" / "models"
    assert [p.name for p in cached.parent.iterdir()] == [spec.file_name]  # no temp left
    source.unlink()  # the second load reads the cache, no network
    again = load_progan(spec, download=False)
    z = torch.randn(1, 512)
    with torch.no_grad():
        assert torch.equal(gen(z), again(z))


def test_dead_host_falls_back_and_a_mirror_comes_first(files, http_folder, monkeypatch):
    """Over HTTP: a dead published host is skipped for the next one; a user's mirror
    ($GANPAINT_MIRRORS) is tried before the published hosts."""
    folder, base, dead = http_folder
    digest = _sha256(files["new"])
    spec = _local_spec(dead + "x.pth", base + "models/x.pth", prefix=digest[:8])
    (folder / "models").mkdir()
    (folder / "models" / "x.pth").write_bytes(files["new"].read_bytes())
    assert _sha256(download.ensure_weights(spec.id, spec.file_name, spec.urls)) == digest
    (paths.models_dir() / spec.file_name).unlink()
    # A mirror holding the file under its published name is tried first.
    (folder / "mirror").mkdir()
    (folder / "mirror" / spec.file_name).write_bytes(files["new"].read_bytes())
    (folder / "models" / "x.pth").unlink()
    monkeypatch.setenv("GANPAINT_MIRRORS", base + "mirror")
    assert download.sources(spec.file_name, spec.urls)[0] == base + "mirror/" + spec.file_name
    assert _sha256(download.ensure_weights(spec.id, spec.file_name, spec.urls)) == digest


def test_offline_message_lists_every_place_tried(tmp_path, http_folder, monkeypatch):
    folder, base, dead = http_folder
    data = tmp_path / "data"
    monkeypatch.setenv("GANPAINT_DATA", str(data))
    data.mkdir()
    (data / "models.json").write_text(json.dumps({"mirrors": [str(tmp_path / "usb")]}))
    monkeypatch.setenv("GANPAINT_MIRRORS", base + "env-mirror/")
    spec = _local_spec(dead + "a.pth", base + "gone/a.pth", prefix="7e701dd5")
    with pytest.raises(ModelError) as e:
        load_progan(spec)
    msg = one_line(e)
    tried = [
        base + "env-mirror/" + spec.file_name,  # $GANPAINT_MIRRORS first
        (tmp_path / "usb" / spec.file_name).as_uri(),  # then the config file's mirrors
        dead + "a.pth",
        base + "gone/a.pth",
    ]
    positions = [msg.index(u) for u in tried]
    assert positions == sorted(positions)
    assert "404" in msg and "refused" in msg.lower()
    dest = paths.models_dir() / spec.file_name
    assert str(dest) in msg and "--checkpoint FILE" in msg and "GANPAINT_MIRRORS" in msg
    assert str(data / "models.json") in msg
    assert not dest.exists()
    with pytest.raises(ModelError) as e:  # downloads off: the same places, nothing fetched
        load_progan(spec, download=False)
    assert all(u in one_line(e) for u in tried) and "downloads are off" in one_line(e)


def test_hash_mismatch_keeps_the_file_and_says_how_to_use_it(files, tmp_path, capsys):
    """The name's hex is a convention the reference never checks: a mismatching download is
    kept, the error gives both hashes and a --checkpoint that works."""
    digest = _sha256(files["new"])
    spec = _local_spec(files["new"], prefix=_other_prefix(digest))
    with pytest.raises(ModelError) as e:
        load_progan(spec)
    msg = one_line(e)
    kept = paths.models_dir() / (spec.file_name + ".unverified")
    assert digest in msg and spec.sha256_prefix in msg and f"--checkpoint {kept}" in msg
    assert _sha256(kept) == digest and not (paths.models_dir() / spec.file_name).exists()
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temp left
    # The next attempt does not download again; it repeats the advice.
    os.rename(files["new"], tmp_path / "moved.pth")
    try:
        with pytest.raises(ModelError) as again:
            load_progan(spec)
        assert digest in one_line(again) and "delete it to download again" in one_line(again)
    finally:
        os.rename(tmp_path / "moved.pth", files["new"])
    # The advice works: the kept file loads with --checkpoint.
    gen = load_progan(spec, checkpoint=kept)
    assert torch.equal(gen.layers[0].conv.weight, torch.load(kept)["layer1.conv.weight"])


def test_cached_file_with_wrong_hash_is_refused_with_both_hashes(files):
    spec = _local_spec(files["new"], prefix=_other_prefix(_sha256(files["new"])))
    cached = paths.models_dir() / spec.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(ModelError) as e:
        load_progan(spec)
    msg = one_line(e)
    assert str(cached) in msg and _sha256(cached) in msg and spec.sha256_prefix in msg
    assert f"--checkpoint {cached}" in msg


def test_config_file_checkpoint_is_used_by_load_model(files, tmp_path, monkeypatch):
    """ "checkpoints" in <data>/models.json: how a plug-in-started server uses a file that
    does not match its name."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("GANPAINT_DATA", str(data))
    cfg = {"checkpoints": {"progan-churchoutdoor": str(files["old"])}}
    (data / "models.json").write_text(json.dumps(cfg))
    gen = load_model("progan-churchoutdoor", device="cpu", download=False)
    ref = load_model("progan-churchoutdoor", device="cpu", checkpoint=files["new"])
    z = torch.randn(1, 512)
    with torch.no_grad():
        assert torch.equal(gen(z), ref(z))
    (data / "models.json").write_text('{"mirrors": "not a list"}')
    with pytest.raises(ModelError) as e:
        load_model("progan-churchoutdoor", device="cpu", download=False)
    assert "models.json" in one_line(e) and "mirrors" in one_line(e)


@pytest.mark.parametrize(
    "command",
    [
        ["reconstruct", "p.png", "-o", "o.png"],
        ["edit", "p.png", "--mask", "m.png", "-o", "o.png", "--op", "add", "--units", "1"],
        ["concept", "learn", "p.png", "--mask", "m.png", "--name", "x"],
        ["concept", "discover", "-o", "sheet.png"],
    ],
)
def test_every_model_command_takes_checkpoint(command, files):
    """--checkpoint FILE (the way to use a file that fails the name's hash) on every
    command that loads a model; each hands it to load_model."""
    from ganpaint.server.cli.main import build_parser

    args = build_parser().parse_args([*command, "--checkpoint", str(files["old"])])
    assert args.checkpoint == files["old"]


def test_serve_checkpoint_reaches_the_model_pool(files, tmp_path):
    from ganpaint.server.cli.main import UserError, build_parser
    from ganpaint.server.cli.serve import config_from_args
    from ganpaint.server.model_pool import ModelPool

    def cfg(*extra):
        return config_from_args(build_parser().parse_args(["serve", *extra]))

    c = cfg("--model", "progan-churchoutdoor", "--checkpoint", str(files["old"]))
    assert c.checkpoints == {"progan-churchoutdoor": files["old"]}
    c = cfg("--checkpoint", f"progan-bedroom={files['new']}", "--checkpoint", str(files["old"]))
    assert c.checkpoints == {"progan-bedroom": files["new"], "digiface-dcgan64": files["old"]}
    with pytest.raises(UserError, match="no such file"):
        cfg("--checkpoint", str(tmp_path / "nope.pth"))
    with pytest.raises(ModelError, match="unknown model 'progan-nope'"):
        cfg("--checkpoint", f"progan-nope={files['new']}")
    pool = ModelPool(
        torch.device("cpu"), download=False, checkpoints={"progan-bedroom": files["old"]}
    )
    gen = pool.get("progan-bedroom")  # no cached weights, downloads off: the file is used
    assert gen.model_id == "progan-bedroom"


def test_published_spec_offline_message(monkeypatch):
    """A published spec with downloads off: the message gives both hosts and the cache path."""
    spec = PROGAN_SPECS["progan-churchoutdoor"]
    with pytest.raises(ModelError) as e:
        load_model(spec.id, device="cpu", download=False)
    msg = one_line(e)
    assert all(u in msg for u in spec.urls) and str(paths.models_dir() / spec.file_name) in msg


# -- folders and speed ------------------------------------------------------------------
@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG folders are Linux's")
def test_user_folders(monkeypatch, tmp_path):
    monkeypatch.delenv("GANPAINT_CACHE")
    monkeypatch.delenv("GANPAINT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    assert paths.models_dir() == tmp_path / "xc" / "ganpaint" / "models"
    assert paths.data_dir() == tmp_path / "xd" / "ganpaint"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert paths.cache_dir() == Path.home() / ".cache" / "ganpaint"
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "d"))
    assert paths.cache_dir() == tmp_path / "c" and paths.data_dir() == tmp_path / "d"


def test_edit_runs_end_to_end_with_a_published_concept(files, tmp_path):
    """The ProGAN path through the CLI: published "tree" units with the demo's published
    0.99-quantile values, a photo larger than 256 px."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    from samples import make_mask, make_photo

    from ganpaint.core.imageio import read_image, write_image

    photo, mask = make_photo(300, 360), make_mask(300, 360, (100, 120, 200, 240))
    write_image(tmp_path / "p.png", photo)
    write_image(tmp_path / "m.png", mask[..., None])
    env = {**os.environ, "GANPAINT_DATA": str(tmp_path / "data")}
    cmd = [
        sys.executable,
        "-m",
        "ganpaint.server.cli",
        "edit",
        str(tmp_path / "p.png"),
        "--mask",
        str(tmp_path / "m.png"),
        "-o",
        str(tmp_path / "o.png"),
        "--model",
        "progan-churchoutdoor",
        "--checkpoint",
        str(files["new"]),
        "--concept",
        "tree",
        "--strength",
        "low",
        "--op",
        "add",
        "--steps",
        "2",
        "--invert-steps",
        "2",
        "--json",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == "progan-churchoutdoor" and info["steps"] == 2
    assert info["units"] == [119, 125, 157, 195] and info["strength"] == "low"
    out = read_image(tmp_path / "o.png")
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask == 255] != photo[mask == 255]).any()
