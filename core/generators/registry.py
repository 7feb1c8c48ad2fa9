"""Which models exist, where their weights come from, and how to load one by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .base import LayeredGenerator, ModelError, freeze
from .dcgan import MODEL_ID as DCGAN_ID
from .dcgan import load_dcgan64

DEFAULT_MODEL = DCGAN_ID


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str  # "dcgan64" | "progan256" | "progan1024" | "stylegan2" | "stylegan3"
    resolution: int
    source: str  # where the weights come from, for humans
    file_name: str = ""
    urls: tuple[str, ...] = ()  # published download places, in order (mirrors go first)
    sha256_prefix: str = ""  # what the file name promises; see download.py
    encoder: str = ""  # shipped encoder, a file in ganpaint/core/data/encoders/ ("" = none)
    added: bool = False  # a user's file (ganpaint models add): file_name is its path

    @property
    def url(self) -> str:
        """The first published download place ("" when the weights are not downloaded)."""
        return self.urls[0] if self.urls else ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["urls"] = list(self.urls)
        d["url"] = self.url  # the first one, as before urls existed
        return d


def _specs() -> dict[str, ModelSpec]:
    from .progan import PROGAN_SPECS  # local: keeps the DCGAN path import-light
    from .stylegan_files import STYLEGAN_SPECS
    from .user_models import added_models

    specs = {
        DCGAN_ID: ModelSpec(
            DCGAN_ID,
            "dcgan64",
            64,
            "pip package gan-face-generate==1.1.1",
            "weights.tar",
            encoder="digiface-dcgan64.pt",
        ),
    }
    specs.update(PROGAN_SPECS)
    specs.update(STYLEGAN_SPECS)
    for model_id, rec in added_models().items():
        if model_id not in specs:  # models add refuses built-in names; a hand edit is ignored
            specs[model_id] = ModelSpec(
                model_id,
                str(rec.get("family", "stylegan2")),
                int(rec.get("resolution", 0)),
                f"added from {rec['file']} ({rec.get('format', '?')})",
                rec["file"],
                sha256_prefix=str(rec.get("sha256", "")),
                added=True,
            )
    return specs


def model_specs() -> list[ModelSpec]:
    return list(_specs().values())


def get_spec(model_id: str) -> ModelSpec:
    specs = _specs()
    if model_id not in specs:
        raise ModelError(f"unknown model {model_id!r}; known: {', '.join(specs)}")
    return specs[model_id]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(device)


def load_model(
    model_id: str = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    checkpoint: Path | None = None,
    download: bool = True,
) -> LayeredGenerator:
    """Load a registered model (frozen, eval mode) onto a device.

    ``checkpoint`` overrides where the weights are read from (any file in the published
    layout, not hash-checked); so does a ``"checkpoints"`` entry for the model in the models
    config file (download.config_path()). Otherwise DCGAN reads the installed package and
    ProGAN the user cache, downloading (and verifying) when allowed.
    """
    from .download import configured_checkpoint

    spec = get_spec(model_id)
    if checkpoint is None:
        checkpoint = configured_checkpoint(model_id)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if spec.family == "dcgan64":
        gen = load_dcgan64(checkpoint, verify=checkpoint is None)
    elif spec.family in ("stylegan2", "stylegan3"):
        gen = _load_stylegan(spec, checkpoint, download)
    else:
        from .progan import load_progan

        gen = load_progan(spec, checkpoint=checkpoint, download=download)
    return freeze(gen.to(dev))


def _load_stylegan(spec: ModelSpec, checkpoint: Path | None, download: bool) -> LayeredGenerator:
    """A catalogue StyleGAN (downloaded when missing) or a user's added file (SHA-256
    checked again); ``checkpoint`` overrides either, unchecked."""
    from .download import ensure_weights
    from .stylegan_files import load_stylegan
    from .user_models import added_models, verified_file

    if checkpoint is None and spec.added:
        checkpoint = verified_file(spec.id, added_models()[spec.id])
    elif checkpoint is None:
        checkpoint = ensure_weights(spec.id, spec.file_name, spec.urls, download)
    return load_stylegan(Path(checkpoint), spec.id)
