"""ProGAN-256: architecture, both published checkpoint layouts, broken files, download."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ganpaint.core import paths
from ganpaint.core.generators import ModelError, get_spec, load_model, model_specs
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


def _local_spec(source: Path, prefix: str):
    """A registry entry whose URL is a local file:// (urllib serves it like http)."""
    return dataclasses.replace(
        PROGAN_SPECS["progan-churchoutdoor"],
        id="progan-test",
        file_name=f"proggan_test-{prefix}.pth",
        url=source.as_uri(),
        sha256_prefix=prefix,
    )


def test_download_verifies_and_caches(files, tmp_path):
    source = tmp_path / "server" / "weights.pth"
    source.parent.mkdir()
    source.write_bytes(files["old"].read_bytes())
    spec = _local_spec(source, _sha256(source)[:8])
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


def test_download_with_wrong_hash_is_refused(files, tmp_path):
    digest = _sha256(files["new"])
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    spec = _local_spec(files["new"], wrong)
    with pytest.raises(ModelError) as e:
        load_progan(spec)
    assert "SHA-256" in one_line(e)
    folder = paths.models_dir()
    assert not folder.exists() or not any(folder.iterdir())  # temp file deleted


def test_cached_file_with_wrong_hash_is_refused(files):
    spec = _local_spec(
        files["new"], "0" * 8 if not _sha256(files["new"]).startswith("0" * 8) else "f" * 8
    )
    cached = paths.models_dir() / spec.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(ModelError) as e:
        load_progan(spec)
    assert str(cached) in one_line(e)


def test_offline_message_names_file_url_and_place(tmp_path):
    spec = _local_spec(tmp_path / "unreachable" / "x.pth", "7e701dd5")
    dest = paths.models_dir() / spec.file_name
    for download in (True, False):
        with pytest.raises(ModelError) as e:
            load_progan(spec, download=download)
        msg = one_line(e)
        assert spec.url in msg and str(dest) in msg
    assert not dest.exists()


def test_published_spec_offline_message(monkeypatch):
    """A published spec with downloads off: the message gives the URL and the cache path."""
    spec = PROGAN_SPECS["progan-churchoutdoor"]
    with pytest.raises(ModelError) as e:
        load_model(spec.id, device="cpu", download=False)
    msg = one_line(e)
    assert spec.url in msg and str(paths.models_dir() / spec.file_name) in msg


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
    """The ProGAN path through the CLI: published "tree" units, their 0.99-quantile values
    computed from the loaded generator, a photo larger than 256 px."""
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
    out = read_image(tmp_path / "o.png")
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask == 255] != photo[mask == 255]).any()
