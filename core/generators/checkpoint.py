"""Reading torch checkpoints safely, with one-line errors for broken files."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .base import ModelError


def load_state_dict(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (weights_only: never runs pickled code).

    ``key`` picks a nested dict (e.g. ``netG_state_dict``); a missing key, a truncated or
    non-torch file raises ModelError naming the file.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        KeyError,
        IndexError,
    ) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(
            f"cannot read checkpoint {path}: truncated or not a torch file ({first})"
        ) from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ModelError(f"checkpoint {path} has no {key!r} entry")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint {path} is not a state dict of tensors")
    return obj
