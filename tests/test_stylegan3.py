"""StyleGAN3 (-T, -R): NVIDIA pickles read without running them, the layered interface, the
selection's frame on margin-carrying layers, concept ranking on the image's cells, `models
add` and an edit end to end.

Equality with NVlabs/stylegan3 itself is checked by scripts/verify_stylegan.py --sg3 (it
needs their code; docs/models.md has the figures)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from stylegan_layouts import (
    SG3_ARCH,
    SG3_LAYERS,
    _stand_in_modules,
    records,
    sg3_init_kwargs,
    sg3_state_dict,
    write_nvidia_pickle,
)
from test_stylegan import SystemCall, check_layers_compose, ganpaint

from ganpaint.core.edit import edit_mask
from ganpaint.core.generators import ModelError, load_model
from ganpaint.core.generators.stylegan_files import load_stylegan, sniff


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sg3")
    out = {}
    for v in ("t", "r"):
        out[v] = d / f"sg3-{v}.pkl"
        write_nvidia_pickle(out[v], sg3_state_dict(v), sg3_init_kwargs(v))
    return out


@pytest.mark.parametrize("variant", ["t", "r"])
def test_stylegan3_pickles_load_every_tensor_and_the_architecture(files, variant):
    sd = sg3_state_dict(variant)
    assert sniff(files[variant]) == "nvidia-pkl"
    gen = load_stylegan(files[variant])
    c = gen.cfg
    assert c.variant == variant.upper() and c.conv_kernel == (1 if variant == "r" else 3)
    assert (c.resolution, c.num_layers, c.map_layers, c.num_ws) == (32, 4, 2, 6)
    assert gen.layer_names == ["input"] + [row[0] for row in SG3_LAYERS]
    assert [gen.out_shape(i) for i in range(gen.n_layers)] == [
        (32, 36, 36),
        (32, 36, 36),
        (32, 52, 52),
        (32, 52, 52),
        (32, 32, 32),
        (3, 32, 32),
    ]
    own = gen.state_dict()
    names = gen.published_names()
    assert set(names) == set(sd)  # every tensor of the file is used, none is missing
    for theirs, ours in names.items():
        assert torch.equal(own[ours], sd[theirs]), theirs
    z = torch.randn(2, SG3_ARCH["z_dim"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = gen(gen.map(z, psi=0.7))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all() and x.std() > 0


def test_a_T_file_with_R_arguments_is_one_line_naming_the_tensor(tmp_path):
    path = tmp_path / "mixed.pkl"
    write_nvidia_pickle(path, sg3_state_dict("t"), sg3_init_kwargs("r"))
    with pytest.raises(ModelError) as e:
        load_stylegan(path)
    msg = str(e.value)
    assert "\n" not in msg and "L0_36_32" in msg and "StyleGAN3-R" in msg and path.name in msg


def test_layers_compose_bind_fixes_styles_and_samples_are_batch_independent(files):
    gen = load_stylegan(files["t"]).eval()
    w, x = check_layers_compose(gen)
    with torch.no_grad():
        torch.testing.assert_close(gen(w[1:]), x[1:], rtol=0, atol=1e-6)
    k = gen.edit_index + 1
    w = w[:1].clone().requires_grad_(True)
    r = gen.run(w, 0, k)
    r.retain_grad()
    gen.bind(w).run(r, k).square().mean().backward()
    assert w.grad.abs().sum() > 0 and r.grad.abs().sum() > 0


def test_a_selection_lands_on_the_image_part_of_a_margin_layer(files):
    """L0 samples the image at 16² in a 36² map (10 cells of margin each side): a selection
    of the image's right half switches cells of columns 18..25 only, never the margin."""
    gen = load_stylegan(files["t"])
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1
    layer = gen.index("L0_36_32")
    cells = edit_mask(gen.layer_mask(mask, layer), 36)[0, 0]
    cols = cells.amax(0).nonzero().flatten().tolist()
    rows = cells.amax(1).nonzero().flatten().tolist()
    assert cols == list(range(18, 26)) and rows == list(range(10, 26))
    # The last layers have no margin: the selection is the mask itself.
    assert gen.layer_mask(mask, gen.n_layers - 1) is mask


class _PaintedUnits(torch.nn.Module):
    """A synthesis layer whose units ``painted`` are replaced by fixed maps [h, w]."""

    def __init__(self, conv: torch.nn.Module, painted: dict[int, torch.Tensor]):
        super().__init__()
        self.conv, self.painted = conv, painted

    def forward(self, x, ws):
        out = self.conv(x, ws).clone()
        for unit, value in self.painted.items():
            out[:, unit] = value
        return out


def test_concept_learn_and_discover_rank_on_the_image_not_the_margin(files):
    """The edit layer L0_36_32 covers the image with its central 16² cells (rows and columns
    10..25). Unit 3 fires in the image's left half and in the map's right margin, unit 5 only
    in the margin. Learnt from the image's right half, unit 3 fires outside the selection,
    not inside: it must not rank (on the whole map, its right margin reads as inside, and it
    ranked first). Unit 5 is constant over the image: discover leaves it out as dead (on the
    whole map it joined a group)."""
    import numpy as np
    from samples import make_photo

    from ganpaint.core.concepts.discover import discover
    from ganpaint.core.concepts.learn import learn_concept
    from ganpaint.core.pipeline import fit_settings

    gen = load_stylegan(files["t"]).eval()
    k = gen.edit_index
    assert gen.layer_names[k] == "L0_36_32"
    left_and_margin, margin = torch.zeros(36, 36), torch.full((36, 36), 50.0)
    left_and_margin[10:26, 10:18] = 50  # the image's left half
    left_and_margin[:, 26:] = 50  # the right margin
    margin[10:26, 10:26] = 0
    gen.layers[k].conv = _PaintedUnits(gen.layers[k].conv, {3: left_and_margin, 5: margin})
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    concept = learn_concept(
        gen, make_photo(64, 64), mask, "right", fit_settings("fast", 1, invert_steps=2),
        scale=torch.ones(32),
    )  # fmt: skip
    assert concept.units and 3 not in concept.units
    groups = discover(gen, groups=4, n_samples=16).groups
    ranked = [u for g in groups for u in g]
    assert 5 not in ranked and len(ranked) >= 20


def test_a_stylegan3_pickle_carrying_code_loads_without_running_it(tmp_path):
    """NVIDIA's loader would exec the carried source; ours drops it unread. A global
    named anywhere inside the records (here os.system in a layer's state) is refused."""
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')"
    good = tmp_path / "carried.pkl"
    write_nvidia_pickle(good, sg3_state_dict("t"), sg3_init_kwargs("t"), payload)
    gen = load_stylegan(good)
    assert gen.cfg.variant == "T" and not marker.exists()
    evil = tmp_path / "evil.pkl"
    with _stand_in_modules():
        g = records(sg3_state_dict("t"), sg3_init_kwargs("t"), payload)
        layer = g.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["L1_52_32"]
        layer.meta["state"]["conv_clamp"] = SystemCall(f"touch {marker}")
        with open(evil, "wb") as f:
            pickle.dump({"G_ema": g}, f)
    r = ganpaint("models", "add", evil, "--name", "evil", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{os.system.__module__}.system" in r.stderr and evil.name in r.stderr
    assert not marker.exists()


def test_catalogue_lists_stylegan3_ffhq_and_downloads_only_when_asked():
    from ganpaint.core.generators import get_spec

    ngc = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
    for v in ("t", "r"):
        spec = get_spec(f"stylegan3-{v}-ffhq")
        assert spec.family == "stylegan3" and spec.resolution == 1024
        assert spec.url == f"{ngc}stylegan3-{v}-ffhq-1024x1024.pkl"
    with pytest.raises(ModelError) as e:
        load_model("stylegan3-t-ffhq", device="cpu", download=False)
    msg = str(e.value)
    assert "downloads are off" in msg and ngc in msg and "--checkpoint FILE" in msg


def test_models_add_and_a_fast_edit_end_to_end_on_a_stylegan3(files, tmp_path):
    """Removing units (no on-values to sample: the add path is the same code) changes the
    selection and nothing outside it."""
    import numpy as np
    from samples import make_mask, make_photo

    from ganpaint.core.imageio import read_image, write_image

    env = {"GANPAINT_DATA": os.environ["GANPAINT_DATA"]}
    r = ganpaint("models", "add", files["r"], "--name", "tiny-sg3", "--json", env_extra=env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["family"] == "stylegan3" and rec["layers"] == 6 and rec["edit_layer"] == "L0_36_32"
    listed = json.loads(ganpaint("models", "--json", env_extra=env).stdout)["models"]
    assert next(m for m in listed if m["id"] == "tiny-sg3")["family"] == "stylegan3"
    photo, mask = make_photo(40, 48), make_mask(40, 48, (10, 12, 26, 30))
    write_image(tmp_path / "p.png", photo)
    write_image(tmp_path / "m.png", mask[..., None])
    r = ganpaint(
        "edit", tmp_path / "p.png", "--mask", tmp_path / "m.png", "-o", tmp_path / "o.png",
        "--model", "tiny-sg3", "--units", "1,4,7", "--op", "remove", "--quality", "fast",
        "--steps", "3", "--invert-steps", "3", "--json", "--quiet", env_extra=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "tiny-sg3"
    out = read_image(tmp_path / "o.png")
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask == 255] != photo[mask == 255]).any()
