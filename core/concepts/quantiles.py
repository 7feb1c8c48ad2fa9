"""The units' "on" values of a model: published where the reference ships them, else
computed once from the loaded generator and cached per weights.

GANPaint sets a concept's units to each unit's 0.99-quantile activation over random samples
(``edit.unit_quantiles``).

- Published: the GANPaint demo ships every layer4 unit's 0.99 quantile for ProGAN
  churchoutdoor (CSAILVision/gandissect ``client/demo/levels_demo.json``). They are package
  data, ``data/on_values/<model>-<layer>.json``, and are that model's built-in values (they
  belong to the published weights; another checkpoint loaded under that model id gets them
  too).
- Sampled, for every other model and layer: computed for the loaded generator on first use
  and cached next to the downloaded checkpoints, in ``<cache_dir>/models/quantiles/``
  ``<model>-<fingerprint>-<layer>-q<q>-n<n>-s<seed>.json``, where the fingerprint hashes
  the generator's state dict (a different checkpoint passed with ``--checkpoint`` gets its
  own file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import weakref
from pathlib import Path

import torch

from ..edit import unit_quantiles
from .files import atomic_write_json
from .record import ConceptError

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


def published_dir() -> Path:
    return Path(__file__).resolve().parent / "data" / "on_values"


def published_table(model_id: str, layer: str, q: float = DEFAULT_Q) -> dict | None:
    """The reference's on-values of a model's layer: {"values": [C floats], "source", ...},
    or None when the reference ships none (then they are sampled)."""
    data = _published_file(model_id, layer)
    return data if data is not None and abs(float(data.get("quantile", -1)) - q) < 1e-9 else None


@functools.lru_cache(maxsize=32)
def _published_file(model_id: str, layer: str) -> dict | None:
    """The parsed package-data file (read once a process: it never changes under us)."""
    path = published_dir() / f"{model_id}-{layer}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # package data: broken means a broken install
        raise ConceptError(f"{path} is unreadable ({e}); reinstall ganpaint") from None
    if data.get("model") != model_id or data.get("layer") != layer:
        raise ConceptError(f"{path} is not the table of {model_id} {layer}; reinstall ganpaint")
    return data


def values_source(model_id: str, layer: str, q: float = DEFAULT_Q) -> dict:
    """Where ``on_values`` takes a layer's values from, for people: {"kind", "source", ...}."""
    table = published_table(model_id, layer, q)
    if table is not None:
        return {
            "kind": "published",
            "source": table.get("source", ""),
            "quantile": q,
            "file": f"ganpaint/core/concepts/data/on_values/{model_id}-{layer}.json",
        }
    return {
        "kind": "sampled",
        "source": f"{q:g} quantile over {DEFAULT_SAMPLES} random samples of the loaded weights, "
        "cached per weights",
        "quantile": q,
    }


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
    published: bool = True,
) -> torch.Tensor:
    """[C] each unit's q-quantile activation at ``layer`` (default: the edit layer).

    The published table when the reference ships one for this model and layer (and
    ``published``); otherwise sampled from ``gen``.
    cache: True = the default folder, a Path = that folder, False/None = compute only.
    Memoised in-process by (model, fingerprint, layer, q, n, seed).
    """
    name = gen.infos[gen.index(gen.edit_layer if layer is None else layer)].name
    table = published_table(gen.model_id, name, q) if published else None
    if table is not None:
        values = torch.tensor([float(v) for v in table["values"]])
        if values.shape != (gen.out_shape(name)[0],):
            raise ConceptError(
                f"published on-values of {gen.model_id} {name} have {values.numel()} units, "
                f"the loaded generator {gen.out_shape(name)[0]}"
            )
        return values
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
