"""StyleGAN checkpoints a user brings: which format a file is, its architecture, its weights.

Formats:

- ``nvidia-pkl``: a ``pickle.dump`` of stylegan2-ada-pytorch or stylegan3 (``G_ema`` is the
  generator), read by safe_pickle.py without running its code; the architecture comes from
  ``G_ema``'s constructor arguments (``_init_kwargs``), checked against every tensor's shape.
- ``rosinality``: a ``torch.save`` of rosinality/stylegan2-pytorch (``{"g_ema": state dict,
  "latent_avg": w̄, …}``), read with ``torch.load(weights_only=True)``; the architecture comes
  from the tensors' names and shapes.
- TensorFlow pickles (the original StyleGAN2 release) are refused with the command that
  converts them (safe_pickle.TF_ADVICE).
"""

from __future__ import annotations

import argparse
import math
import re
import zipfile
from pathlib import Path

import torch

from .base import ModelError
from .registry import ModelSpec
from .safe_pickle import Record, read_network_pickle
from .stylegan2 import StyleBased, StyleGAN2, StyleGAN2Config
from .stylegan3 import StyleGAN3, StyleGAN3Config

# The published StyleGAN2 and StyleGAN3 networks we know by name, downloaded only when asked
# for. Their names carry no hash, so nothing checks them beyond loading.
_NVIDIA = "https://nvlabs-fi-cdn.nvidia.com/"
_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
STYLEGAN_SPECS: dict[str, ModelSpec] = {
    s.id: s
    for s in (
        ModelSpec(
            "stylegan2-ffhq",
            "stylegan2",
            1024,
            "FFHQ 1024, StyleGAN2 (Karras et al. 2020) as released with stylegan2-ada-pytorch",
            "ffhq.pkl",
            (_NVIDIA + "stylegan2-ada-pytorch/pretrained/ffhq.pkl",),
        ),
        ModelSpec(
            "stylegan2-church",
            "stylegan2",
            256,
            "LSUN church 256, StyleGAN2 config-f (a TensorFlow pickle: convert it first, "
            "docs/models.md)",
            "stylegan2-church-config-f.pkl",
            (
                _NVIDIA + "stylegan2/networks/stylegan2-church-config-f.pkl",
                "http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/stylegan2-church-config-f.pkl",
            ),
        ),
        *(
            ModelSpec(
                f"stylegan3-{v}-ffhq",
                "stylegan3",
                1024,
                f"FFHQ 1024, StyleGAN3-{v.upper()} (Karras et al. 2021) as released with "
                "NVlabs/stylegan3",
                f"stylegan3-{v}-ffhq-1024x1024.pkl",
                (_NGC + f"stylegan3-{v}-ffhq-1024x1024.pkl",),
            )
            for v in ("t", "r")
        ),
    )
}

# torch.save's legacy format starts with its magic number 0x1950a86a20f9469cfc6c, pickled.
TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def sniff(path: Path) -> str:
    """ "nvidia-pkl" | "torch" (a torch.save file) | "" (neither) from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "torch" if zipfile.is_zipfile(path) else ""
    if not head.startswith(b"\x80"):
        return ""
    return "torch" if head.startswith(TORCH_LEGACY_HEAD) else "nvidia-pkl"


Config = StyleGAN2Config | StyleGAN3Config


def load_stylegan(path: Path, model_id: str = "stylegan2") -> StyleBased:
    """The generator in a user's StyleGAN file, weights loaded (float32)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    cfg, sd, _ = read_file(path)
    gen = StyleGAN3(cfg, model_id) if isinstance(cfg, StyleGAN3Config) else StyleGAN2(cfg, model_id)
    gen.load_published(sd, path)
    return gen


def read_file(path: Path) -> tuple[Config, dict[str, torch.Tensor], str]:
    """(architecture, tensors in NVIDIA's names, format) of a user's file."""
    kind = sniff(path)
    if kind == "nvidia-pkl":
        return (*read_nvidia(path), "nvidia-pkl")
    if kind == "torch":
        return (*read_rosinality(path), "rosinality")
    raise ModelError(f"{path}: neither an NVIDIA network pickle nor a torch checkpoint")


# -- NVIDIA pickles ----------------------------------------------------------------------
def read_nvidia(path: Path) -> tuple[Config, dict[str, torch.Tensor]]:
    data = read_network_pickle(path)
    g = data.get("G_ema")
    if not isinstance(g, Record):
        raise ModelError(
            f"{path}: no G_ema network in the pickle (keys: {', '.join(map(str, data))})"
        )
    synthesis = g.children().get("synthesis")
    parts = synthesis.children() if synthesis is not None else {}
    if "input" in parts:
        return config3_from_kwargs(g.init_kwargs, path), g.state_dict()
    if "b4" not in parts:
        raise ModelError(f"{path}: G_ema is neither a StyleGAN2 nor a StyleGAN3 generator")
    return config_from_kwargs(g.init_kwargs, path), g.state_dict()


def _kwargs(kw: dict, source: object) -> tuple[dict, dict]:
    """(mapping kwargs, synthesis kwargs): the stylegan3 repository passes the synthesis
    arguments flat, stylegan2-ada-pytorch under ``synthesis_kwargs``; unrunnable cases are
    a one-line ModelError."""
    top = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"}
    sk = {k: v for k, v in kw.items() if k not in top and k != "synthesis_kwargs"}
    sk.update(kw.get("synthesis_kwargs") or {})
    mk = dict(kw.get("mapping_kwargs") or {})
    if kw.get("c_dim", 0):
        raise ModelError(
            f"{source}: a class-conditional generator (c_dim {kw['c_dim']}); not supported"
        )
    if kw.get("img_channels", 3) != 3:
        raise ModelError(f"{source}: {kw['img_channels']} image channels; only RGB models load")
    return mk, sk


def _unreadable(source: object, e: Exception) -> ModelError:
    return ModelError(f"{source}: unreadable generator arguments ({type(e).__name__}: {e})")


def config3_from_kwargs(kw: dict, source: object) -> StyleGAN3Config:
    """StyleGAN3's architecture from its Generator's constructor arguments (-T or -R: the
    conv kernel and the radial filters say which), the reference's defaults where absent."""
    mk, sk = _kwargs(kw, source)
    d = StyleGAN3Config()
    try:
        clamp = sk.get("conv_clamp", d.conv_clamp)
        return StyleGAN3Config(
            resolution=int(kw["img_resolution"]),
            z_dim=int(kw.get("z_dim", 512)),
            w_dim=int(kw.get("w_dim", 512)),
            map_layers=int(mk.get("num_layers", d.map_layers)),
            lr_multiplier=float(mk.get("lr_multiplier", d.lr_multiplier)),
            conv_clamp=None if clamp is None else float(clamp),
            use_radial_filters=bool(sk.get("use_radial_filters", False)),
            **{k: type(getattr(d, k))(sk.get(k, getattr(d, k))) for k in _SG3_NUMBERS},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _unreadable(source, e) from None


_SG3_NUMBERS = (
    "channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff",
    "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res",
    "conv_kernel", "filter_size", "lrelu_upsampling",
)  # fmt: skip


def config_from_kwargs(kw: dict, source: object) -> StyleGAN2Config:
    """The architecture from Generator's constructor arguments (the reference's defaults
    where one is absent); what we cannot run is a one-line ModelError."""
    mk, sk = _kwargs(kw, source)
    if sk.get("architecture", "skip") != "skip":
        raise ModelError(
            f"{source}: synthesis architecture {sk['architecture']!r}; only 'skip' loads"
        )
    for key, want in (("activation", "lrelu"),):
        if mk.get(key, want) != want:
            raise ModelError(f"{source}: mapping {key} {mk[key]!r}; only {want!r} loads")
    try:
        clamp = sk.get("conv_clamp")
        return StyleGAN2Config(
            resolution=int(kw["img_resolution"]),
            z_dim=int(kw.get("z_dim", 512)),
            w_dim=int(kw.get("w_dim", 512)),
            map_layers=int(mk.get("num_layers", 8)),
            channel_base=int(sk.get("channel_base", 32768)),
            channel_max=int(sk.get("channel_max", 512)),
            conv_clamp=None if clamp is None else float(clamp),
            num_fp16_res=int(sk.get("num_fp16_res", 0)),
            lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _unreadable(source, e) from None


# -- rosinality --------------------------------------------------------------------------
def read_rosinality(path: Path) -> tuple[StyleGAN2Config, dict[str, torch.Tensor]]:
    """rosinality's g_ema in NVIDIA's names, and the architecture its shapes imply."""
    try:  # training checkpoints also hold their argparse options
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; all mean "unreadable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"cannot read checkpoint {path}: ({first})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("g_ema"), dict):
        raise ModelError(f"{path}: a torch file without a g_ema state dict (not rosinality's)")
    g = obj["g_ema"]
    if not all(isinstance(v, torch.Tensor) for v in g.values()) or "input.input" not in g:
        raise ModelError(f"{path}: g_ema is not rosinality's StyleGAN2 generator")
    n_mlp = len([k for k in g if re.fullmatch(r"style\.\d+\.weight", k)])
    n_up = len([k for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    res = 4 * 2**n_up
    w_dim = g["style.1.weight"].shape[0] if n_mlp else 0
    chans = {4: g["input.input"].shape[1]}
    for j in range(n_up):
        chans[8 * 2**j] = g[f"to_rgbs.{j}.conv.weight"].shape[2]
    cmax = max(chans.values())
    base = chans[res] * res
    if any(c != min(base // r, cmax) for r, c in chans.items()):
        raise ModelError(f"{path}: channels {chans} follow no channel_base/channel_max rule")
    # resolution, z_dim, w_dim, mapping layers, channel base and max; no clamp
    cfg = StyleGAN2Config(res, w_dim, w_dim, n_mlp, base, cmax)
    latent_avg = obj.get("latent_avg")
    if not isinstance(latent_avg, torch.Tensor):
        latent_avg = torch.zeros(w_dim)
    return cfg, rosinality_to_nvidia(g, latent_avg.reshape(-1), n_mlp, n_up)


def rosinality_to_nvidia(
    g: dict[str, torch.Tensor], latent_avg: torch.Tensor, n_mlp: int, n_up: int
) -> dict[str, torch.Tensor]:
    """rosinality's tensor names → NVIDIA's (blur kernels, fixed [1,3,3,1], dropped)."""
    out = {"mapping.w_avg": latent_avg, "synthesis.b4.const": g["input.input"][0]}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = g[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = g[f"style.{i + 1}.bias"]

    def conv(src: str, dst: str, noise: str) -> None:
        out[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = g[f"{src}.noise.weight"].reshape(())
        out[f"{dst}.noise_const"] = g[noise][0, 0]
        out[f"{dst}.bias"] = g[f"{src}.activate.bias"]

    def torgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = g[f"{src}.bias"].reshape(-1)

    try:
        conv("conv1", "synthesis.b4.conv1", "noises.noise_0")
        torgb("to_rgb1", "synthesis.b4.torgb")
        for j in range(n_up):
            b = f"synthesis.b{8 * 2**j}"
            conv(f"convs.{2 * j}", f"{b}.conv0", f"noises.noise_{2 * j + 1}")
            conv(f"convs.{2 * j + 1}", f"{b}.conv1", f"noises.noise_{2 * j + 2}")
            torgb(f"to_rgbs.{j}", f"{b}.torgb")
    except KeyError as e:
        raise ModelError(f"rosinality checkpoint lacks {e.args[0]}") from None
    return out


def file_arch(path: Path) -> dict:
    """What ``models add`` records about a file: format and architecture."""
    cfg, _, fmt = read_file(Path(path))
    sg3 = isinstance(cfg, StyleGAN3Config)
    return {
        "format": fmt,
        "family": "stylegan3" if sg3 else "stylegan2",
        "resolution": cfg.resolution,
        "layers": cfg.num_layers + 2 if sg3 else int(math.log2(cfg.resolution)) * 2 - 2,
    }
