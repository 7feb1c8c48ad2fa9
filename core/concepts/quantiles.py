"""The units' "on" values of a loaded generator, computed once and cached per weights.

GANPaint sets a concept's units to each unit's 0.99-quantile activation over random samples
(``edit.unit_quantiles``). The published rankings ship without numbers, because the numbers
belong to the weights: they are computed for the loaded generator on first use and cached in
``<cache_dir>/models/quantiles/<model>-<fingerprint>-<layer>-q<q>-n<n>-s<seed>.json`` next to
the downloaded checkpoints, where the fingerprint hashes the generator's state dict (a
different checkpoint passed with ``--checkpoint`` gets its own file).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path

import torch

from ..edit import unit_quantiles
from .files import atomic_write_json

DEFAULT_SAMPLES = 256  # as PipelineConfig.quantile_samples: the same numbers either way
DEFAULT_Q = 0.99

_memo: dict[tuple, torch.Tensor] = {}
# Generators are frozen after loading: hash each one once (an 18 M-parameter ProGAN takes
# a noticeable fraction of a second).
_fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_fingerprint(gen: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over the state dict (names, dtypes, shapes, bytes)."""
    try:
        return _fingerprints[gen]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256()
    for name, t in sorted(gen.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    fp = h.hexdigest()[:16]
    try:
        _fingerprints[gen] = fp
    except TypeError:
        pass
    return fp


def quantile_dir() -> Path:
    from ..paths import models_dir

    return models_dir() / "quantiles"


def on_values(
    gen,
    layer: str | int | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    q: float = DEFAULT_Q,
    seed: int = 0,
    cache: Path | None | bool = True,
) -> torch.Tensor:
    """[C] each unit's q-quantile activation at ``layer`` (default: the edit layer).

    cache: True = the default folder, a Path = that folder, False/None = compute only.
    Memoised in-process by (model, fingerprint, layer, q, n, seed).
    """
    name = gen.infos[gen.index(gen.edit_layer if layer is None else layer)].name
    fp = weights_fingerprint(gen)
    key = (gen.model_id, fp, name, q, n_samples, seed)
    if key in _memo:
        return _memo[key].clone()
    folder = quantile_dir() if cache is True else (Path(cache) if cache else None)
    path = None
    if folder is not None:
        path = folder / f"{gen.model_id}-{fp}-{name}-q{q:g}-n{n_samples}-s{seed}.json"
        values = _read(path, gen.out_shape(name)[0])
        if values is not None:
            _memo[key] = values
            return values.clone()
    values = unit_quantiles(gen, name, n_samples, q, seed).float()
    if path is not None:
        try:
            atomic_write_json(
                path,
                {
                    "model": gen.model_id,
                    "fingerprint": fp,
                    "layer": name,
                    "q": q,
                    "n_samples": n_samples,
                    "seed": seed,
                    "values": [float(v) for v in values],
                },
            )
        except OSError:
            pass  # a read-only cache only costs the recomputation next time
    _memo[key] = values
    return values.clone()


def _read(path: Path, channels: int) -> torch.Tensor | None:
    """The cached values, or None when missing or unusable (then they are recomputed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = torch.tensor([float(v) for v in data["values"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if values.shape != (channels,) or not torch.isfinite(values).all():
        return None
    return values
