"""The encoder (core/encoder.py): augmentations, resumable training, the shipped weights, and
the inversion that starts from it (core/invert.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from ganpaint.core.encoder import (
    AugmentConfig,
    EncoderArch,
    ImageEncoder,
    TrainConfig,
    augment,
    export_state,
    jpeg_like,
    load_encoder,
    model_encoder,
    train,
)
from ganpaint.core.generators.base import ModelError
from ganpaint.core.invert import InvertConfig, bf16_pays, default_config, invert
from ganpaint.core.metrics import psnr


@pytest.fixture(scope="module")
def samples(dcgan):
    with torch.no_grad():
        return dcgan(dcgan.sample_latent(8, torch.Generator().manual_seed(3)))


def test_augment_keeps_clean_samples_and_range(samples):
    cfg = AugmentConfig(clean_fraction=0.5)
    inp, target, clean = augment(samples, cfg, torch.Generator().manual_seed(0))
    assert inp.shape == target.shape == samples.shape and clean.shape == (8,)
    assert inp.min() >= -1 and inp.max() <= 1
    assert 0 < clean.sum() < 8  # both kinds in this draw
    assert torch.equal(target[clean], samples[clean])  # clean: the target is G's image
    assert not torch.allclose(target[~clean], samples[~clean], atol=1e-3)
    again = augment(samples, cfg, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((inp, target, clean), again, strict=True))


def test_jpeg_like_quantises_high_frequencies(samples):
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = (((yy + xx) % 2) * 0.2 - 0.1).float().expand(1, 3, 64, 64)
    x = torch.cat([samples[:1], checker])
    hi, lo = jpeg_like(x, torch.tensor([100.0, 100.0])), jpeg_like(x, torch.tensor([10.0, 10.0]))
    assert (hi - x).abs().max() < 0.05  # quality 100: steps of 1 grey level
    # quality 10 throws the finest checkerboard (the highest DCT frequency) away
    assert lo[1].std() < 0.2 * checker.std()
    assert psnr(lo[:1], x[:1]) < psnr(hi[:1], x[:1]) - 5


def test_training_resumes_where_it_stopped(dcgan, tmp_path):
    """Two runs of 2 steps each (the second resumes last.pt) equal one run of 4 steps."""
    cfg = TrainConfig(steps=4, batch=4, width=8, max_width=16, val_size=8, val_every=2)
    train(dcgan, cfg, tmp_path / "once")
    train(dcgan, dataclasses.replace(cfg, steps=2), tmp_path / "twice")
    state = train(dcgan, cfg, tmp_path / "twice")
    assert state.step == 4
    a = torch.load(tmp_path / "once" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "twice" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k, v in a["encoder"].items():
        assert torch.allclose(v, b["encoder"][k], atol=1e-6), k
    enc = load_encoder(tmp_path / "once" / "encoder.pt", dcgan)
    assert enc.meta["step"] in (2, 4) and math.isfinite(enc.meta["val_psnr"])


def test_training_refuses_another_architecture(dcgan, tmp_path):
    cfg = TrainConfig(steps=1, batch=2, width=8, max_width=16, val_size=2)
    train(dcgan, cfg, tmp_path)
    with pytest.raises(ModelError, match="another model or architecture"):
        train(dcgan, dataclasses.replace(cfg, steps=2, width=16), tmp_path)


def test_load_encoder_checks_the_model(dcgan, tmp_path):
    enc = ImageEncoder(EncoderArch(64, 100, 8, 16))
    path = tmp_path / "e.pt"
    torch.save(export_state(enc, "some-other-model", {}), path)
    with pytest.raises(ModelError, match="encoder for some-other-model"):
        load_encoder(path, dcgan)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read encoder"):
        load_encoder(path, dcgan)


def test_shipped_encoder_finds_the_latent_of_samples(dcgan, samples):
    """The shipped encoder's z reproduces G's samples far better than random latents do."""
    enc = model_encoder(dcgan)
    assert enc is not None and enc.meta.get("command", "").startswith("ganpaint encoder train")
    with torch.no_grad():
        rec = dcgan(enc(samples).view(-1, *dcgan.latent_shape))
        other = dcgan(dcgan.sample_latent(8, torch.Generator().manual_seed(4)))
    enc_db = sum(psnr(rec[i : i + 1], samples[i : i + 1]) for i in range(8)) / 8
    rand_db = sum(psnr(other[i : i + 1], samples[i : i + 1]) for i in range(8)) / 8
    assert enc_db > rand_db + 4


def test_inversion_from_the_encoder_beats_the_encoder_alone(dcgan, samples):
    x = (samples[5:6] + 0.05 * torch.randn(1, 3, 64, 64, generator=torch.Generator())).clamp(-1, 1)
    enc = model_encoder(dcgan)
    alone = invert(dcgan, x, InvertConfig(z_steps=0, r_steps=0, encoder=enc))
    cfg = dataclasses.replace(default_config(enc), r_steps=30)
    inv = invert(dcgan, x, cfg)
    assert cfg.optimizer == "lbfgs" and inv.steps <= 30
    assert inv.psnr > alone.psnr + 3


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_inversion_stops_early_when_psnr_stalls(dcgan, samples, optimizer):
    # An unreachable min_gain: the first check sets the best, the next ones never beat it.
    cfg = InvertConfig(starts=2, z_steps=0, r_steps=200, patience=20, min_gain=1e9)
    inv = invert(dcgan, samples[:1], dataclasses.replace(cfg, optimizer=optimizer))
    assert inv.steps == 30  # checks at 10 (best), 20, 30: 20 steps without gain


def test_lbfgs_spends_exactly_its_budget_and_more_never_ends_worse(dcgan, samples):
    # One L-BFGS run for the whole budget: it spends exactly its evaluations (a line search
    # may not run past them), the same evaluations happen whatever the budget so a larger
    # one never ends worse, and progress comes every 10 evaluations and at the end.
    x = samples[3:4]
    seen = []
    scores = []
    for budget in range(4, 17):
        cfg = InvertConfig(starts=1, z_steps=0, r_steps=budget, optimizer="lbfgs", loss="mse")
        inv = invert(dcgan, x, cfg, progress=seen.append if budget == 16 else None)
        assert inv.steps == budget
        scores.append(inv.psnr)
    assert scores == sorted(scores) and scores[-1] > scores[0]
    assert [p.step for p in seen] == [10, 16] and all(p.total == 16 for p in seen)


def test_default_config_caps_the_steps():
    enc = default_config(lambda x: x, total_steps=40)
    free = default_config(None, total_steps=40)
    assert enc.total_steps == free.total_steps == 40 and enc.encoder is not None
    assert default_config(None).starts < InvertConfig().starts


def test_bad_optimizer_is_refused(dcgan, samples):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        invert(dcgan, samples[:1], InvertConfig(starts=1, z_steps=1, r_steps=1, optimizer="sgd"))
    with pytest.raises(ValueError, match="precision one of"):
        invert(dcgan, samples[:1], InvertConfig(starts=1, z_steps=1, r_steps=1, precision="fp8"))


def test_bf16_evaluations_invert_about_as_well_and_keep_float32(dcgan, samples):
    # G in bfloat16 autocast, r and L-BFGS in float32: a different path (not the same r),
    # nearly the same PSNR, and everything handed on is float32.
    x = (samples[2:3] + 0.05 * torch.randn(1, 3, 64, 64, generator=torch.Generator())).clamp(-1, 1)
    enc = model_encoder(dcgan)
    alone = invert(dcgan, x, InvertConfig(z_steps=0, r_steps=0, encoder=enc))
    runs = {
        p: invert(dcgan, x, dataclasses.replace(default_config(enc, precision=p), r_steps=40))
        for p in ("fp32", "bf16")
    }
    assert not torch.equal(runs["fp32"].r, runs["bf16"].r)
    assert runs["bf16"].r.dtype == runs["bf16"].z.dtype == torch.float32
    assert runs["bf16"].psnr > alone.psnr + 3
    assert abs(runs["bf16"].psnr - runs["fp32"].psnr) < 1.0


def test_auto_precision_is_bf16_only_on_a_bf16_cpu_for_a_large_model(dcgan, samples):
    assert bf16_pays(256, "cpu", True)
    assert not bf16_pays(64, "cpu", True)  # the default model: no faster, a little worse
    assert not bf16_pays(256, "cpu", False)  # emulated bf16 is slower
    assert not bf16_pays(256, "cuda", True)  # not measured on a GPU
    # so on the 64 px default model "auto" is float32 on any machine, bit for bit
    cfg = InvertConfig(starts=1, z_steps=0, r_steps=12, optimizer="lbfgs", loss="mse")
    auto, fp32 = (
        invert(dcgan, samples[:1], dataclasses.replace(cfg, precision=p)) for p in ("auto", "fp32")
    )
    assert torch.equal(auto.r, fp32.r)


def test_cli_trains_resumes_and_shows_an_encoder(tmp_path, capsys):
    from ganpaint.server.cli.main import main

    out = tmp_path / "enc"
    common = ["encoder", "train", "--out", str(out), "--batch", "2", "--width", "8"]
    assert main([*common, "--steps", "1", "--quiet", "--json"]) == 0
    assert main([*common, "--steps", "2", "--quiet", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [1, 2]
    assert main(["encoder", "info", str(out / "encoder.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "digiface-dcgan64" and info["arch"]["width"] == 8
    # the best weights so far, with the command of the run that wrote them
    assert info["command"].startswith("ganpaint encoder train --model digiface-dcgan64 --out")
    assert info["step"] in (1, 2) and info["seed"] == 0
    assert main([*common, "--steps", "0"]) == 2  # a user error: one line, status 2
