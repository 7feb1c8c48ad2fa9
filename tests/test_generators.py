import shutil

import pytest
import torch

from ganpaint.core.generators import ModelError, load_model, model_specs
from ganpaint.core.generators.dcgan import WEIGHTS_SHA256, load_dcgan64, sha256_file, weights_path


def test_default_model_is_the_published_file(dcgan):
    assert sha256_file(weights_path()) == WEIGHTS_SHA256
    assert dcgan.resolution == 64
    assert dcgan.layer_names == ["layer1", "layer2", "layer3", "layer4", "output"]
    assert dcgan.out_shape("layer2") == (256, 8, 8)
    assert dcgan.default_split() == 2  # n − 5 = 0, clamped past the edit layer
    assert not any(p.requires_grad for p in dcgan.parameters())


def test_layer_ranges_compose_to_forward(dcgan):
    z = dcgan.sample_latent(2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = dcgan(z)
        mid = dcgan.run(z, 0, 3)
        assert mid.shape == (2, 128, 16, 16)
        assert torch.equal(dcgan.run(mid, 3), full)
        assert torch.equal(dcgan.features(z, "layer2"), dcgan.run(z, 0, 2))
    assert full.shape == (2, 3, 64, 64)
    assert full.abs().max() <= 1
    # real trained weights draw varied images, not noise or a constant
    assert full.std() > 0.2


def test_layer_lookup_errors(dcgan):
    with pytest.raises(KeyError, match="unknown layer"):
        dcgan.index("layer9")
    with pytest.raises(IndexError):
        dcgan.index(7)


def test_registry_lists_default_and_rejects_unknown():
    ids = [s.id for s in model_specs()]
    assert "digiface-dcgan64" in ids
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_model("nope")


def test_tampered_weights_fail_the_hash_check(tmp_path):
    bad = tmp_path / "weights.tar"
    shutil.copy(weights_path(), bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_dcgan64(bad, verify=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + b"\0" * 50])
def test_broken_checkpoint_is_one_line_error(tmp_path, content):
    path = tmp_path / "broken.tar"
    path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        load_model("digiface-dcgan64", "cpu", checkpoint=path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_truncated_real_checkpoint(tmp_path):
    path = tmp_path / "trunc.tar"
    path.write_bytes(weights_path().read_bytes()[:5_000_000])
    with pytest.raises(ModelError) as e:
        load_model("digiface-dcgan64", "cpu", checkpoint=path)
    assert "\n" not in str(e.value)


def test_checkpoint_with_wrong_layout(tmp_path):
    path = tmp_path / "wrong.tar"
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(ModelError, match="64×64 layout|unexpected key"):
        load_model("digiface-dcgan64", "cpu", checkpoint=path)
    torch.save({"something_else": {}}, path)
    with pytest.raises(ModelError, match="netG_state_dict"):
        load_model("digiface-dcgan64", "cpu", checkpoint=path)
