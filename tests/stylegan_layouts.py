"""StyleGAN2 checkpoints written here, in the published layouts, from seeded random tensors.

- ``ada_state_dict``: the names and shapes of stylegan2-ada-pytorch's ``G_ema.state_dict()``
  for a small architecture, written out from the architecture's description.
- ``write_nvidia_pickle``: that state as NVIDIA's ``pickle.dump`` writes it: each module a
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` record with its class name,
  source and ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``),
  kwargs as ``dnnlib.util.EasyDict``. Stand-in modules are put into sys.modules only while
  pickling, so that pickle can name those globals; nothing of theirs runs on loading.
- ``to_rosinality``: the same tensors under rosinality/stylegan2-pytorch's names.
- ``sg3_state_dict`` / ``sg3_init_kwargs``: a small StyleGAN3-T or -R ``G_ema`` in NVlabs/
  stylegan3's names, shapes and constructor arguments (the layer table is the reference's
  for that architecture), pickled by the same ``write_nvidia_pickle``.
"""

from __future__ import annotations

import collections
import contextlib
import math
import pickle
import sys
import types

import torch

ARCH = dict(res=16, z_dim=32, w_dim=32, maps=2, base=256, cmax=32, clamp=256.0)


def channels(res: int, arch: dict = ARCH) -> int:
    return min(arch["base"] // res, arch["cmax"])


def ada_state_dict(arch: dict = ARCH, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, mean=0.0, std=1.0):
        return mean + std * torch.randn(shape, generator=g)

    fir = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    w, sd = arch["w_dim"], {}
    dims = [arch["z_dim"]] + [w] * arch["maps"]
    for i in range(arch["maps"]):
        sd[f"mapping.fc{i}.weight"] = rnd(dims[i + 1], dims[i], std=100.0)  # randn / lr 0.01
        sd[f"mapping.fc{i}.bias"] = rnd(dims[i + 1], std=0.1)
    sd["mapping.w_avg"] = rnd(w)
    res_list = [2**i for i in range(2, int(math.log2(arch["res"])) + 1)]
    for res in res_list:
        b, c = f"synthesis.b{res}", channels(res, arch)
        if res == 4:
            sd[f"{b}.const"] = rnd(c, 4, 4)
        sd[f"{b}.resample_filter"] = fir.clone()
        convs = ["conv1"] if res == 4 else ["conv0", "conv1"]
        for conv in convs:
            cin = channels(res // 2, arch) if conv == "conv0" else c
            sd[f"{b}.{conv}.resample_filter"] = fir.clone()
            sd[f"{b}.{conv}.noise_const"] = rnd(res, res)
            sd[f"{b}.{conv}.weight"] = rnd(c, cin, 3, 3)
            sd[f"{b}.{conv}.noise_strength"] = rnd(std=0.2)
            sd[f"{b}.{conv}.bias"] = rnd(c, std=0.2)
            sd[f"{b}.{conv}.affine.weight"] = rnd(cin, w)
            sd[f"{b}.{conv}.affine.bias"] = rnd(cin, mean=1.0, std=0.2)
        sd[f"{b}.torgb.weight"] = rnd(3, c, 1, 1)
        sd[f"{b}.torgb.bias"] = rnd(3, std=0.2)
        sd[f"{b}.torgb.affine.weight"] = rnd(c, w)
        sd[f"{b}.torgb.affine.bias"] = rnd(c, mean=1.0, std=0.2)
    return sd


def _generator_kwargs(arch: dict) -> dict:
    """The arguments every NVIDIA Generator takes (unconditional, RGB)."""
    return dict(
        z_dim=arch["z_dim"],
        c_dim=0,
        w_dim=arch["w_dim"],
        img_resolution=arch["res"],
        img_channels=3,
        mapping_kwargs=_EasyDict(num_layers=arch["maps"]),
    )


def init_kwargs(arch: dict = ARCH) -> dict:
    return dict(
        **_generator_kwargs(arch),
        synthesis_kwargs=_EasyDict(
            channel_base=arch["base"],
            channel_max=arch["cmax"],
            num_fp16_res=2,
            conv_clamp=arch["clamp"],
        ),
    )


# -- NVIDIA's pickle -----------------------------------------------------------------------
class _EasyDict(dict):
    pass


_EasyDict.__module__, _EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
BUFFERS = ("w_avg", "noise_const", "resample_filter", "magnitude_ema", "up_filter")
BUFFERS += ("down_filter", "transform", "freqs", "phases")


def _class_name(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if last == "input":
        return "SynthesisInput"
    if last[:1] == "L" and last[1:2].isdigit():
        return "SynthesisLayer"
    if last in ("mapping", "synthesis"):
        return {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork"}[last]
    if last.startswith("fc") or last == "affine":
        return "FullyConnectedLayer"
    if last.startswith("conv"):
        return "SynthesisLayer"
    return "ToRGBLayer" if last == "torgb" else "SynthesisBlock"


class Persistent:
    """Pickles as NVIDIA's persistent classes do: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


def records(
    sd: dict[str, torch.Tensor], kwargs: dict, source: str = "", prefix: str = ""
) -> Persistent:
    """The module at ``prefix`` (and below) as persistent records."""
    params, buffers, children = collections.OrderedDict(), collections.OrderedDict(), {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :].split(".")
        if len(rest) == 1:
            group = buffers if rest[0] in BUFFERS else params
            group[rest[0]] = torch.nn.Parameter(value) if group is params else value
        else:
            children.setdefault(rest[0], None)
    modules = collections.OrderedDict(
        (name, records(sd, {}, source, f"{prefix}{name}.")) for name in children
    )
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_modules": modules,
        "_forward_hooks": collections.OrderedDict(),
        "_init_args": (),
        "_init_kwargs": kwargs,
        "activation": "lrelu",
    }
    meta = dict(
        type="class",
        version=4,
        module_src=source,
        class_name=_class_name(prefix.rstrip(".")),
        state=state,
    )
    return Persistent(meta)


@contextlib.contextmanager
def _stand_in_modules():
    """torch_utils.persistence and dnnlib.util exist only while pickling (to be named)."""
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: loading must not need it
        raise AssertionError("the stand-in ran")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = _EasyDict
    mods = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def write_nvidia_pickle(path, sd=None, kwargs=None, source: str = "", extra=None) -> None:
    """``pickle.dump({"G": …, "D": None, "G_ema": …, "augment_pipe": None, …}, f)``."""
    sd = ada_state_dict() if sd is None else sd
    kwargs = init_kwargs() if kwargs is None else kwargs
    with _stand_in_modules():
        g = records(sd, kwargs, source)
        data = {
            "G": g,
            "D": None,
            "G_ema": g,
            "augment_pipe": None,
            "training_set_kwargs": _EasyDict(resolution=ARCH["res"]),
            **(extra or {}),
        }
        with open(path, "wb") as f:
            pickle.dump(data, f)


# -- rosinality ----------------------------------------------------------------------------
def to_rosinality(sd: dict[str, torch.Tensor], arch: dict = ARCH) -> dict:
    """``{"g_ema": …, "latent_avg": …}`` with rosinality's names for the same tensors."""
    g = {}
    for i in range(arch["maps"]):
        g[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        g[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    g["input.input"] = sd["synthesis.b4.const"][None]
    n_up = int(math.log2(arch["res"])) - 2
    convs = [("conv1", "synthesis.b4.conv1")]
    rgbs = [("to_rgb1", "synthesis.b4.torgb")]
    for j in range(n_up):
        b = f"synthesis.b{8 * 2**j}"
        convs += [(f"convs.{2 * j}", f"{b}.conv0"), (f"convs.{2 * j + 1}", f"{b}.conv1")]
        rgbs.append((f"to_rgbs.{j}", f"{b}.torgb"))
    blur = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    for i, (ro, nv) in enumerate(convs):
        g[f"{ro}.conv.weight"] = sd[f"{nv}.weight"][None]
        g[f"{ro}.conv.modulation.weight"] = sd[f"{nv}.affine.weight"]
        g[f"{ro}.conv.modulation.bias"] = sd[f"{nv}.affine.bias"]
        g[f"{ro}.noise.weight"] = sd[f"{nv}.noise_strength"].reshape(1)
        g[f"{ro}.activate.bias"] = sd[f"{nv}.bias"]
        g[f"noises.noise_{i}"] = sd[f"{nv}.noise_const"][None, None]
        if nv.endswith("conv0"):
            g[f"{ro}.conv.blur.kernel"] = blur * 4
    for ro, nv in rgbs:
        g[f"{ro}.conv.weight"] = sd[f"{nv}.weight"][None]
        g[f"{ro}.conv.modulation.weight"] = sd[f"{nv}.affine.weight"]
        g[f"{ro}.conv.modulation.bias"] = sd[f"{nv}.affine.bias"]
        g[f"{ro}.bias"] = sd[f"{nv}.bias"].reshape(1, 3, 1, 1)
        if ro != "to_rgb1":
            g[f"{ro}.upsample.kernel"] = blur * 4
    return {"g_ema": g, "latent_avg": sd["mapping.w_avg"]}


# -- StyleGAN3 -------------------------------------------------------------------------------
SG3_ARCH = dict(res=32, z_dim=32, w_dim=32, maps=2, base=1024, cmax=32, layers=4, clamp=256.0)
# NVlabs/stylegan3's SynthesisNetwork for SG3_ARCH: (name, in, out, up taps, down taps) per
# layer; in -R the non-critically-sampled layers' (L0, L1) down filters are radial (2-D).
SG3_LAYERS = [
    ("L0_36_32", 32, 32, 12, 12),
    ("L1_52_32", 32, 32, 24, 12),
    ("L2_52_32", 32, 32, 12, 12),
    ("L3_32_32", 32, 32, 12, 12),
    ("L4_32_3", 32, 3, 1, 1),
]
SG3_RADIAL = ("L0_36_32", "L1_52_32")


def _lowpass(taps: int) -> torch.Tensor:
    f = torch.hann_window(taps + 2, periodic=False)[1:-1]
    return f / f.sum()


def sg3_state_dict(variant: str = "t", seed: int = 0) -> dict[str, torch.Tensor]:
    """A StyleGAN3-``variant`` (t or r) ``G_ema.state_dict()`` of SG3_ARCH, seeded."""
    a, g = SG3_ARCH, torch.Generator().manual_seed(seed)

    def rnd(*shape, mean=0.0, std=1.0):
        return mean + std * torch.randn(shape, generator=g)

    w, sd = a["w_dim"], {}
    for i in range(a["maps"]):
        sd[f"mapping.fc{i}.weight"] = rnd(w, a["z_dim"] if i == 0 else w, std=100.0)
        sd[f"mapping.fc{i}.bias"] = rnd(w, std=0.1)
    sd["mapping.w_avg"] = rnd(w)
    c0 = SG3_LAYERS[0][1]
    sd["synthesis.input.weight"] = rnd(c0, c0)
    sd["synthesis.input.transform"] = torch.eye(3)
    sd["synthesis.input.freqs"] = rnd(c0, 2)
    sd["synthesis.input.phases"] = torch.rand(c0, generator=g) - 0.5
    sd["synthesis.input.affine.weight"] = rnd(4, w, std=0.3)
    sd["synthesis.input.affine.bias"] = torch.tensor([1.0, 0, 0, 0])
    k = 1 if variant == "r" else 3
    for name, cin, cout, up, down in SG3_LAYERS:
        p = f"synthesis.{name}"
        torgb = cout == 3
        sd[f"{p}.weight"] = rnd(cout, cin, *(2 * (1 if torgb else k,)))
        sd[f"{p}.bias"] = rnd(cout, std=0.2)
        sd[f"{p}.magnitude_ema"] = 0.5 + torch.rand((), generator=g)
        if up > 1:
            sd[f"{p}.up_filter"] = _lowpass(up)
        if down > 1:
            f = _lowpass(down)
            radial = variant == "r" and name in SG3_RADIAL
            sd[f"{p}.down_filter"] = torch.outer(f, f) if radial else f
        sd[f"{p}.affine.weight"] = rnd(cin, w)
        sd[f"{p}.affine.bias"] = rnd(cin, mean=1.0, std=0.2)
    return sd


def sg3_init_kwargs(variant: str = "t") -> dict:
    """Generator's ``_init_kwargs`` as stylegan3's train.py passes them (synthesis flat)."""
    a = SG3_ARCH
    kw = dict(
        **_generator_kwargs(a),
        channel_base=a["base"],
        channel_max=a["cmax"],
        num_layers=a["layers"],
        magnitude_ema_beta=0.5 ** (32 / 20e3),
        num_fp16_res=4,
        conv_clamp=a["clamp"],
    )
    if variant == "r":
        kw.update(conv_kernel=1, use_radial_filters=True)
    return kw
