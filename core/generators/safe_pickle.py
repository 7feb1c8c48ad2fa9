"""Reading NVIDIA's network pickles without running anything they carry.

stylegan2-ada-pytorch and stylegan3 save their networks with ``pickle.dump``. Every network
module is a "persistent class": it pickles as ``torch_utils.persistence.
_reconstruct_persistent_obj(meta)``, where ``meta`` holds the class's Python source
(``module_src``), its name and its ``__dict__`` (parameters, buffers, sub-modules, the
constructor's ``_init_kwargs``). Their loader ``exec``s that source. Ours never does: a
restricted unpickler rebuilds only an allow-list of data types and turns each persistent
record into a :class:`Record` (class name + state), dropping the source unread.

Allowed: tensors and parameters (``torch._utils._rebuild_*``), storages (their legacy-format
bytes read with ``torch.load(weights_only=True)``), ``collections.OrderedDict``,
``dnnlib.util.EasyDict`` (read as a dict), sets, numpy arrays and scalars of plain dtypes,
torch dtypes and sizes. Anything else, a class or function the file names, is refused with
a ModelError that names it: a pickle never gets to call it.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

from .base import ModelError

PERSISTENT = ("torch_utils.persistence", "_reconstruct_persistent_obj")
# The TF-era pickles of the original StyleGAN2 (dnnlib.tflib), refused with the way out.
TF_NETWORK = ("dnnlib.tflib.network", "Network")
TF_ADVICE = (
    "a TensorFlow StyleGAN pickle; convert it once with NVlabs/stylegan2-ada-pytorch's "
    "legacy.py (python legacy.py --source=FILE --dest=OUT.pkl, in that repository with its "
    "requirements) and load OUT.pkl"
)


@dataclass
class Record:
    """A persistent-class object as plain data: its class name and its ``__dict__``."""

    class_name: str
    state: dict = field(repr=False)

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get("_init_kwargs", {})
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def children(self) -> dict[str, Record]:
        mods = self.state.get("_modules", {})
        return {k: v for k, v in mods.items() if isinstance(v, Record)}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The tensors torch's ``Module.state_dict()`` would give, by the same names."""
        out: dict[str, torch.Tensor] = {}
        skip = self.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor) and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in self.children().items():
            out.update(child.state_dict(f"{prefix}{name}."))
        return out


class _EasyDict(dict):
    """dnnlib.util.EasyDict read as a plain dict (it is one, with attribute access)."""


def _load_storage(data: bytes):
    # What torch.storage._load_from_bytes does, but through the weights-only unpickler.
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a storage that is not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _record(meta) -> Record:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("a persistent-class record of an unknown kind")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("a persistent-class record without name or state")
    return Record(name, dict(state))  # meta["module_src"] is dropped unread


_NUMPY = {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar}
_ALLOWED = {
    PERSISTENT: _record,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{c}.multiarray", n): f for c in ("core", "_core") for n, f in _NUMPY.items()},
}


class Refused(pickle.UnpicklingError):
    """The pickle names something outside the allow-list."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) == TF_NETWORK:
            raise Refused(TF_ADVICE)
        raise Refused(f"it names {module}.{name}, which is code, not data; refused")

    def persistent_load(self, pid):
        raise Refused("it uses persistent ids (a torch.save file, not pickle.dump); refused")


def read_network_pickle(path: Path) -> dict:
    """The top-level dict of an NVIDIA network pickle (``G``, ``D``, ``G_ema`` … as
    Records), read without running any of its code; any problem is a one-line ModelError."""
    try:
        with open(path, "rb") as f:
            obj = _Unpickler(f).load()
    except Refused as e:
        raise ModelError(f"{path}: not loaded: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(
            f"cannot read {path}: truncated or not a network pickle ({first})"
        ) from None
    except (OSError, AttributeError, KeyError, IndexError) as e:
        raise ModelError(f"cannot read {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: a pickle of {type(obj).__name__}, not a dict of networks")
    return obj
