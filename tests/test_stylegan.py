"""StyleGAN2: NVIDIA pickles read without running them, rosinality files, the layered
interface, and `ganpaint models add`.

Equality with the reference implementations themselves is checked by
scripts/verify_stylegan.py (it needs their code; docs/models.md has the figures)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stylegan_layouts import (
    ARCH,
    _stand_in_modules,
    ada_state_dict,
    init_kwargs,
    records,
    to_rosinality,
    write_nvidia_pickle,
)

from ganpaint.core.generators import ModelError, load_model
from ganpaint.core.generators.stylegan_files import load_stylegan, sniff

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return ada_state_dict()


@pytest.fixture(scope="module")
def files(sd, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sg")
    out = {"pkl": d / "net.pkl", "pt": d / "rosinality.pt", "legacy": d / "legacy.pt"}
    write_nvidia_pickle(out["pkl"], sd)
    torch.save(to_rosinality(sd), out["pt"])
    torch.save(to_rosinality(sd), out["legacy"], _use_new_zipfile_serialization=False)
    return out


def ganpaint(*args, env_extra=None, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    cmd = [sys.executable, "-m", "ganpaint.server.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


# -- reading the published layouts ---------------------------------------------------------
def test_nvidia_pickle_loads_every_tensor_and_the_architecture(files, sd):
    assert sniff(files["pkl"]) == "nvidia-pkl"
    gen = load_stylegan(files["pkl"])
    c = gen.cfg
    assert (c.resolution, c.z_dim, c.w_dim, c.map_layers) == (16, 32, 32, 2)
    assert (c.channel_base, c.channel_max, c.conv_clamp, c.num_fp16_res) == (256, 32, 256.0, 2)
    assert gen.layer_names == [
        "b4.conv1",
        "b8.conv0",
        "b8.conv1",
        "b16.conv0",
        "b16.conv1",
        "output",
    ]
    assert gen.latent_shape == (6, 32)  # W+: one w per conv, plus the last toRGB's
    # Channels: min(256 // r, 32) features + the RGB skip image.
    assert [gen.out_shape(i) for i in range(5)] == [
        (35, 4, 4),
        (35, 8, 8),
        (35, 8, 8),
        (19, 16, 16),
        (19, 16, 16),
    ]
    assert gen.out_shape("output") == (3, 16, 16)
    own = gen.state_dict()
    for theirs, ours in gen.published_names().items():
        assert torch.equal(own[ours], sd[theirs]), theirs
    # Every tensor of the file but the fixed resample filters is used.
    assert set(gen.published_names()) == {k for k in sd if not k.endswith("resample_filter")}


@pytest.mark.parametrize("kind", ["pt", "legacy"])
def test_rosinality_file_gives_the_same_image_as_the_nvidia_pickle(files, kind):
    """The same tensors under the two publishers' names (renamed by the test's own table),
    read through two different loaders, draw the same image."""
    assert sniff(files[kind]) == "torch"
    a, b = load_stylegan(files["pkl"]), load_stylegan(files[kind])
    assert b.cfg.channel_base == 256 and b.cfg.channel_max == 32 and b.cfg.conv_clamp is None
    z = torch.randn(2, ARCH["z_dim"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        wa, wb = a.map(z, psi=0.7), b.map(z, psi=0.7)
        assert torch.equal(wa, wb)
        x = a(wa)
        assert x.shape == (2, 3, 16, 16) and x.abs().max() < 256  # the clamp never acts
        torch.testing.assert_close(x, b(wb), rtol=0, atol=1e-5)


def check_layers_compose(gen) -> tuple[torch.Tensor, torch.Tensor]:
    """G run whole equals G_H then G_F at every split, with the styles bound; unbound, the
    later layers use the mean w. Returns (W+, image) of a batch of 2."""
    w = gen.sample_latent(2, torch.Generator().manual_seed(3))
    assert w.shape == (2, 6, 32)
    with torch.no_grad():
        x = gen(w)
        bound = gen.bind(w)
        for k in range(1, gen.n_layers):
            assert torch.equal(bound.run(gen.run(w, 0, k), k), x)
        # Unbound, the later layers use the mean w: another image from the same features.
        k = gen.edit_index + 1
        assert not torch.allclose(gen.run(gen.run(w, 0, k), k), x)
    return w, x


def test_layers_compose_and_bind_fixes_the_styles(files):
    gen = load_stylegan(files["pkl"]).eval()
    w, x = check_layers_compose(gen)
    with torch.no_grad():
        bound = gen.bind(w)
        # A view: the same weights, the original left unbound.
        assert bound.layers[1].conv is gen.layers[1].conv and gen.layers[1].ws is None


def test_gradients_reach_w_plus_and_the_edit_layer(files):
    gen = load_stylegan(files["pkl"])
    w = gen.sample_latent(1).requires_grad_(True)
    k = gen.edit_index + 1
    r = gen.run(w, 0, k)
    r.retain_grad()
    gen.bind(w).run(r, k).square().mean().backward()
    assert w.grad.abs().sum() > 0 and r.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "case, expect",
    [
        ("conditional", "class-conditional"),
        ("resnet", "architecture 'resnet'"),
        ("shape", "synthesis.b8.conv1.weight"),
        ("missing", "missing synthesis.b16.torgb.bias"),
        ("no-g-ema", "no G_ema"),
        ("truncated", "truncated"),
    ],
)
def test_broken_nvidia_pickles_give_one_line_errors(case, expect, sd, tmp_path):
    path, kw, sd = tmp_path / f"{case}.pkl", init_kwargs(), dict(sd)
    if case == "conditional":
        kw["c_dim"] = 10
    elif case == "resnet":
        kw["synthesis_kwargs"]["architecture"] = "resnet"
    elif case == "shape":
        sd["synthesis.b8.conv1.weight"] = torch.zeros(32, 32, 1, 1)
    elif case == "missing":
        del sd["synthesis.b16.torgb.bias"]
    if case == "no-g-ema":
        with _stand_in_modules(), open(path, "wb") as f:
            pickle.dump({"G": records(sd, kw)}, f)
    else:
        write_nvidia_pickle(path, sd, kw)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelError) as e:
        load_stylegan(path)
    assert "\n" not in str(e.value) and expect in str(e.value) and path.name in str(e.value)


# -- nothing in a pickle runs ----------------------------------------------------------------
class SystemCall:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _malicious(kind: str, folder: Path, marker: Path) -> tuple[Path, str]:
    """(a pickle, what the one-line refusal names)."""
    path = folder / f"{kind}.pkl"
    payload = f"open({str(marker)!r}, 'w').write('ran')"
    if kind == "carried-source":  # NVIDIA's own loader would exec this module source
        write_nvidia_pickle(path, {"mapping.w_avg": torch.zeros(4)}, init_kwargs(), payload)
        return path, "neither a StyleGAN2 nor a StyleGAN3"
    if kind == "os-system":
        with open(path, "wb") as f:
            pickle.dump({"G_ema": SystemCall(f"touch {marker}")}, f)
        return path, f"{os.system.__module__}.system"  # posix.system on Linux
    # torch_utils on sys.path whose import would run: the pickle names one of its functions.
    pkg = folder / "torch_utils"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(payload + "\n")
    (pkg / "misc.py").write_text(f"{payload}\ndef restore(x):\n    {payload}\n")
    with _stand_in_modules():
        import types

        misc = types.ModuleType("torch_utils.misc")

        def restore(x):
            return x

        restore.__module__, restore.__qualname__ = "torch_utils.misc", "restore"
        misc.restore = restore
        sys.modules["torch_utils.misc"] = misc
        try:
            data = {"G_ema": records(ada_state_dict(), init_kwargs(), payload), "x": restore}
            with open(path, "wb") as f:
                pickle.dump(data, f)
        finally:
            del sys.modules["torch_utils.misc"]
    return path, "torch_utils.misc.restore"


@pytest.mark.parametrize("kind", ["carried-source", "os-system", "torch-utils-on-path"])
def test_malicious_pickles_run_nothing_and_exit_2_with_one_line(kind, tmp_path):
    marker = tmp_path / "ran"
    path, names = _malicious(kind, tmp_path, marker)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    r = ganpaint("models", "add", path, "--name", "evil", env_extra=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and path.name in lines[0], r.stderr
    assert not marker.exists()
    assert "evil" not in ganpaint("models", env_extra=env).stdout


def test_tensorflow_pickle_is_refused_with_the_way_to_convert(tmp_path):
    import types

    tf = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return (Network, (), {"version": 4, "name": "G"})

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    tf.Network = Network
    names = ["dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"]
    sys.modules.update({n: types.ModuleType(n) for n in names[:2]}, **{names[2]: tf})
    try:
        path = tmp_path / "tf.pkl"
        with open(path, "wb") as f:  # (G, D, Gs), as the TensorFlow release pickles them
            pickle.dump((Network(), Network(), Network()), f)
    finally:
        for n in names:
            del sys.modules[n]
    with pytest.raises(ModelError) as e:
        load_stylegan(path)
    assert "TensorFlow" in str(e.value) and "legacy.py --source=" in str(e.value)


# -- models add ------------------------------------------------------------------------------
def test_models_add_lists_the_model_and_loads_it_checked(files, tmp_path):
    own = tmp_path / "My Faces.pkl"
    own.write_bytes(files["pkl"].read_bytes())
    env = {"GANPAINT_DATA": os.environ["GANPAINT_DATA"]}
    r = ganpaint("models", "add", own, "--json", env_extra=env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["id"] == "my-faces" and rec["format"] == "nvidia-pkl"
    assert rec["resolution"] == 16 and rec["edit_layer"] == "b8.conv1"
    import hashlib

    assert rec["sha256"] == hashlib.sha256(own.read_bytes()).hexdigest()
    listed = json.loads(ganpaint("models", "--json", env_extra=env).stdout)["models"]
    spec = next(m for m in listed if m["id"] == "my-faces")
    assert spec["family"] == "stylegan2" and spec["resolution"] == 16 and spec["added"]
    gen = load_model("my-faces", device="cpu")
    assert gen.model_id == "my-faces" and gen.resolution == 16
    r = ganpaint("models", "add", files["pt"], "--name", "progan-bedroom", env_extra=env)
    assert r.returncode == 2 and "built-in" in r.stderr
    own.write_bytes(own.read_bytes() + b"\0")  # changed after adding: refused
    with pytest.raises(ModelError, match="has changed since it was added"):
        load_model("my-faces", device="cpu")


def test_catalogue_entries_download_only_when_asked():
    from ganpaint.core.generators import get_spec

    spec = get_spec("stylegan2-ffhq")
    assert spec.resolution == 1024 and spec.url.endswith(
        "/stylegan2-ada-pytorch/pretrained/ffhq.pkl"
    )
    with pytest.raises(ModelError) as e:
        load_model("stylegan2-ffhq", device="cpu", download=False)
    msg = str(e.value)
    assert "downloads are off" in msg and spec.url in msg and "--checkpoint FILE" in msg


# -- the method on StyleGAN2 -----------------------------------------------------------------
@pytest.fixture
def added(files, tmp_path) -> str:
    """The small pickle added as "tiny-sg2" (in this test's private data folder)."""
    from ganpaint.core.generators import model_specs
    from ganpaint.core.generators.user_models import add_model

    add_model(files["pkl"], "tiny-sg2", {s.id for s in model_specs() if not s.added})
    return "tiny-sg2"


@pytest.mark.parametrize("quality", ["fast", "faithful"])
def test_edit_end_to_end_on_an_added_stylegan2(added, quality, tmp_path):
    import numpy as np
    from samples import make_mask, make_photo

    from ganpaint.core.imageio import read_image, write_image

    photo, mask = make_photo(40, 48), make_mask(40, 48, (10, 12, 26, 30))
    write_image(tmp_path / "p.png", photo)
    write_image(tmp_path / "m.png", mask[..., None])
    r = ganpaint(
        "edit", tmp_path / "p.png", "--mask", tmp_path / "m.png", "-o", tmp_path / "o.png",
        "--model", added, "--units", "1,4,7", "--op", "add", "--quality", quality,
        "--steps", "3", "--invert-steps", "3", "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == added and info["steps"] <= 3
    out = read_image(tmp_path / "o.png")
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask == 255] != photo[mask == 255]).any()


def test_a_running_server_lists_and_serves_a_model_added_after_it_started(files):
    import numpy as np
    from samples import make_mask, make_photo
    from test_server_jobs import array, raw

    from ganpaint.core.generators import model_specs
    from ganpaint.core.generators.user_models import add_model
    from ganpaint.server.client.ganpaint_client import Client
    from ganpaint.server.config import ServerConfig
    from ganpaint.server.testing import running_server

    added = "tiny-sg2"
    photo, mask = make_photo(40, 48), make_mask(40, 48, (10, 12, 26, 30))
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", device="cpu", steps=3, invert_steps=3)
    with running_server(cfg) as srv:
        client = Client(srv.endpoint, timeout_s=10.0, retries=2)
        try:
            assert added not in {m["id"] for m in client.hello()["models"]}
            add_model(files["pkl"], added, {s.id for s in model_specs() if not s.added})
            hello = client.hello()
            listed = {m["id"]: m for m in hello["models"]}
            assert listed[added]["family"] == "stylegan2" and listed[added]["resolution"] == 16
            res = client.edit(raw(photo), raw(mask), op="add", units=[1, 4], model=added)
        finally:
            client.close()
    out = array(res["image"])
    assert res["model"] == added
    assert np.array_equal(out[mask == 0], photo[mask == 0])


@pytest.mark.parametrize("command", ["discover", "learn", "encoder"])
def test_concepts_and_the_encoder_work_on_an_added_stylegan2(added, command, tmp_path):
    from samples import make_mask, make_photo

    from ganpaint.core.imageio import write_image

    if command == "discover":
        args = ["concept", "discover", "-o", tmp_path / "sheet.png", "--groups", "2"]
        args += ["--samples", "24"]
    elif command == "learn":
        write_image(tmp_path / "p.png", make_photo(40, 48))
        write_image(tmp_path / "m.png", make_mask(40, 48, (10, 12, 26, 30))[..., None])
        args = ["concept", "learn", tmp_path / "p.png", "--mask", tmp_path / "m.png"]
        args += ["--name", "thing", "--invert-steps", "3"]
    else:
        args = ["encoder", "train", "--out", tmp_path / "enc", "--steps", "2", "--batch", "4"]
    r = ganpaint(*args, "--model", added, "--quiet")
    assert r.returncode == 0, r.stderr
    if command == "discover":
        assert (tmp_path / "sheet.png").stat().st_size > 0
    if command == "encoder":
        assert (tmp_path / "enc" / "encoder.pt").is_file()
