"""StyleGAN2 (config-f and the ADA variants) behind the layered interface.

Architecture (Karras et al. 2020, as NVlabs/stylegan2-ada-pytorch builds it; "skip" generator):

- mapping: z [B, z_dim] → x·rsqrt(mean x² + 1e-8) → ``map_layers`` fully connected layers,
  each y = lrelu(x·(W·lr/√in)ᵀ + b·lr, 0.2)·√2 (lr = 0.01) → w, broadcast to W+ [B, n_ws, w_dim];
  truncation ψ: w_avg + ψ·(w − w_avg).
- synthesis: a block per resolution 4, 8, …, R with C(r) = min(channel_base // r, channel_max)
  channels. b4 is a learned constant 4×4 → conv1; every later block is conv0 (2× up) → conv1.
  A conv: style s = A·w/√w_dim + b_A (bias 1); weight W·s, demodulated per output channel
  (1/√(Σ(W·s)² + 1e-8)); + noise_const·noise_strength; lrelu(· + bias)·√2, clamped to
  ±conv_clamp when the file sets one. The 2× up conv is: zero-insert, FIR [1,3,3,1]⊗[1,3,3,1]/64
  ×4 (pads 3, 2), then a true convolution (the kernel flipped). Each block's toRGB (1×1
  modulated, not demodulated, style ×1/√C) adds to the 2×-upsampled (same FIR, pads 2, 1)
  RGB of the block before; the last block's sum is the image.
- FP16 blocks (``num_fp16_res``) run in float32 here, as the reference does on a CPU.

Layers, one per conv: ``b4.conv1``, ``b8.conv0``, ``b8.conv1``, … ``b{R}.conv1``, then
``output``. Each conv layer's output is its feature map with the RGB skip image so far (at
the same resolution) as 3 more channels: [B, C(r) + 3, r, r]. The layer after needs both,
and the edit and G′'s (1 + δ) see the whole representation. The latent is W+ itself,
[B, n_ws, w_dim] (``sample_latent`` maps z ~ N(0, I)); the layers after a split need their
styles, which come from the latent of the call that starts at layer 0, or from ``bind(w)``
(a view of the generator with those styles fixed), or else the mean w. Noise is always the
file's ``noise_const`` (fixed, as the method needs).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import LayeredGenerator, LayerInfo, ModelError

SQRT2 = math.sqrt(2.0)
RGB = 3


@dataclass(frozen=True)
class StyleGAN2Config:
    resolution: int = 1024
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None
    num_fp16_res: int = 0  # recorded; every layer runs in float32
    lr_multiplier: float = 0.01  # the mapping layers'

    def __post_init__(self):
        r = self.resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"resolution {r} is not a power of two ≥ 4")

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        return 2 * len(self.resolutions)


def _fir() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


def upsample_fir(x: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """Zero-insert 2×, pad (pad0 before, pad1 after), FIR [1,3,3,1]² ×4:
    [B, C, H, W] → [B, C, 2H + pad0 + pad1 − 3, …]."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, h, 2, w, 2)
    up[:, :, :, 0, :, 0] = x
    up = F.pad(up.reshape(b, c, 2 * h, 2 * w), (pad0, pad1, pad0, pad1))
    f = (_fir() * 4).to(x)[None, None].expand(c, 1, 4, 4)  # symmetric: no flip needed
    return F.conv2d(up, f, groups=c)


class Affine(nn.Module):
    """w [B, w_dim] → style [B, C] = w·(A/√w_dim)ᵀ + b (b starts at 1)."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, w_dim))
        self.bias = nn.Parameter(torch.ones(channels))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.linear(w, self.weight / math.sqrt(self.weight.shape[1]), self.bias)


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation: [B, C, r, r] → [B, 3, r, r]."""

    def __init__(self, w_dim: int, cin: int, clamp: float | None):
        super().__init__()
        self.affine = Affine(w_dim, cin)
        self.weight = nn.Parameter(torch.randn(RGB, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(RGB))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w) / math.sqrt(x.shape[1])
        y = F.conv2d(x * s[:, :, None, None], self.weight, self.bias)
        return y.clamp(-self.clamp, self.clamp) if self.clamp is not None else y


class StyleConv(nn.Module):
    """One synthesis conv (+ the block's toRGB after conv1) on the packed representation.

    [B, C_in + 3, r_in, r_in] (features, RGB so far) → [B, C_out + 3, r, r]; the first
    layer (``const``) takes no input and starts from the learned 4×4 constant.
    """

    def __init__(self, cfg: StyleGAN2Config, cin: int, cout: int, res: int, w_index: int, **kind):
        super().__init__()
        self.up, self.first = kind.get("up", False), kind.get("first", False)
        self.w_index = w_index
        if self.first:
            self.const = nn.Parameter(torch.randn(cout, res, res))
        self.affine = Affine(cfg.w_dim, cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(res, res))
        self.clamp = cfg.conv_clamp
        self.torgb = None if self.up else ToRGB(cfg.w_dim, cout, cfg.conv_clamp)

    def forward(self, packed: torch.Tensor | None, ws: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            img = None
        else:
            x, img = packed[:, :-RGB], packed[:, -RGB:]
        w = ws[:, self.w_index]
        s = self.affine(w)  # [B, C_in]
        demod = torch.rsqrt(
            (self.weight.square()[None] * s.square()[:, None, :, None, None]).sum((2, 3, 4)) + 1e-8
        )  # [B, C_out]
        x = x * s[:, :, None, None]
        if self.up:  # zero-insert + FIR, then a true convolution (the kernel flipped)
            x = F.conv2d(upsample_fir(x, 3, 2), self.weight.flip((2, 3)))
            img = upsample_fir(img, 2, 1)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        x = x * demod[:, :, None, None] + self.noise_const * self.noise_strength
        x = F.leaky_relu(x + self.bias[:, None, None], 0.2) * SQRT2
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        if self.torgb is not None:
            y = self.torgb(x, ws[:, self.w_index + 1])
            img = y if img is None else img + y
        return torch.cat([x, img], dim=1)


class OutputRGB(nn.Module):
    """The packed representation's RGB part: [B, C + 3, R, R] → [B, 3, R, R]."""

    def forward(self, packed: torch.Tensor, ws: torch.Tensor | None = None) -> torch.Tensor:
        return packed[:, -RGB:]


class Styled(nn.Module):
    """A synthesis layer with its styles, callable as ``layer(x)`` (the layered interface).

    Styles: ``ws`` [1 or B, n_ws, w_dim] when the generator is bound (StyleGAN2.bind), else
    the file's mean w; ``layer(x, ws)`` overrides both (a run from the latent).
    """

    def __init__(self, conv: nn.Module, mapping: Mapping, ws: torch.Tensor | None = None):
        super().__init__()
        self.conv = conv
        object.__setattr__(self, "mapping", mapping)  # not a submodule: its weights live once
        self.ws = ws

    def forward(self, x: torch.Tensor | None, ws: torch.Tensor | None = None) -> torch.Tensor:
        if ws is None:
            ws = self.ws if self.ws is not None else self.mapping.mean_ws()
        if x is not None and len(ws) == 1 and len(x) > 1:
            ws = ws.expand(len(x), -1, -1)
        return self.conv(x, ws)


class Mapping(nn.Module):
    """z [B, z_dim] → w [B, w_dim] (see the module docstring); ``w_avg`` is the file's."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.lr = cfg.lr_multiplier
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.map_layers
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.num_ws = cfg.num_ws

    def mean_ws(self) -> torch.Tensor:
        """The mean w as W+: [1, n_ws, w_dim]."""
        return self.w_avg[None, None].expand(1, self.num_ws, -1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for fc in self.fc:
            gain = self.lr / math.sqrt(fc.weight.shape[1])
            x = F.leaky_relu(F.linear(x, fc.weight * gain, fc.bias * self.lr), 0.2) * SQRT2
        return x


class StyleBased(LayeredGenerator):
    """What StyleGAN2 and StyleGAN3 share: the mapping network, W+ latents [B, n_ws, w_dim],
    layers wrapped in :class:`Styled`, ``bind``, and loading NVIDIA's tensor names.

    Subclasses set ``cfg`` (with ``z_dim``, ``w_dim``, ``num_ws``), ``mapping`` and the
    layers, and give ``published_names`` and ``describe_arch``.
    """

    # -- latents and styles -----------------------------------------------------------
    def map(self, z: torch.Tensor, psi: float | None = None) -> torch.Tensor:
        """z [B, z_dim] → W+ [B, n_ws, w_dim], truncated towards w_avg by ψ."""
        psi = self.truncation if psi is None else psi
        w = self.mapping(z)
        if psi != 1:
            w = self.mapping.w_avg.lerp(w, psi)
        return w[:, None].expand(-1, self.cfg.num_ws, -1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn((n, self.cfg.z_dim), generator=generator).to(device)
        with torch.no_grad():
            return self.map(z).contiguous()

    def bind(self, latent: torch.Tensor) -> StyleBased:
        """A view (same weights, same modules) whose layers take their styles from
        ``latent`` [1 or B, n_ws, w_dim] when run from a layer after the first."""
        view = copy.copy(self)
        view._modules = dict(self._modules)  # the copy's own, so the original keeps its layers
        ws = latent.detach()
        view.layers = nn.ModuleList(Styled(s.conv, self.mapping, ws) for s in self.layers)
        return view

    # -- running ----------------------------------------------------------------------
    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """From layer 0, x is W+ and gives every layer its styles; from a later layer, x
        is that layer's input and the styles are the bound ones (or the mean w)."""
        stop = self.n_layers if stop is None else stop
        if start > 0:
            return super().run(x, start, stop)
        h = None
        for layer in self.layers[:stop]:
            h = layer(h, x)
        return x if h is None else h

    # -- the published layout ---------------------------------------------------------
    def published_names(self) -> dict[str, str]:
        """NVIDIA's state-dict name (``G_ema.state_dict()``) → ours, for every tensor."""
        raise NotImplementedError

    def describe_arch(self) -> str:
        raise NotImplementedError

    def mapping_names(self) -> dict[str, str]:
        """The mapping network's tensors: NVIDIA's name → ours."""
        names = {"mapping.w_avg": "mapping.w_avg"}
        for i in range(self.cfg.map_layers):
            names[f"mapping.fc{i}.weight"] = f"mapping.fc.{i}.weight"
            names[f"mapping.fc{i}.bias"] = f"mapping.fc.{i}.bias"
        return names

    def load_published(self, sd: dict[str, torch.Tensor], source: object) -> None:
        """Load tensors named as in NVIDIA's ``G_ema.state_dict()`` (StyleGAN2's resample
        filters, fixed [1,3,3,1], are skipped); any mismatch is a one-line ModelError."""
        names = self.published_names()
        sd = {k: v for k, v in sd.items() if not k.endswith("resample_filter")}
        missing = [k for k in names if k not in sd]
        extra = [k for k in sd if k not in names]
        for what, keys in (("missing", missing), ("unexpected key", extra)):
            if keys:
                more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
                raise ModelError(f"{source}: {what} {keys[0]}{more} for {self.describe_arch()}")
        own = self.state_dict()
        mapped = {}
        for theirs, ours in names.items():
            value = sd[theirs]
            if tuple(value.shape) != tuple(own[ours].shape):
                raise ModelError(
                    f"{source}: {theirs} has shape {list(value.shape)}, expected "
                    f"{list(own[ours].shape)} for {self.describe_arch()}"
                )
            if not value.is_floating_point():
                raise ModelError(f"{source}: {theirs} holds {value.dtype}, not floats")
            mapped[ours] = value.float()
        self.load_state_dict(mapped, strict=True)

    def describe(self) -> dict:
        return {**super().describe(), "arch": self.describe_arch()}


class StyleGAN2(StyleBased):
    """A StyleGAN2 generator, W+ [B, n_ws, w_dim] → RGB [B, 3, R, R] (see module docstring)."""

    # The constant noise and the skip image are frame-sized: G_F runs on whole frames only.
    local_layers = False

    def __init__(self, cfg: StyleGAN2Config, model_id: str = "stylegan2"):
        layers: list[nn.Module] = []
        infos: list[LayerInfo] = []
        for res in cfg.resolutions:
            c = cfg.channels(res)
            if res == 4:
                layers.append(StyleConv(cfg, c, c, 4, 0, first=True))
                infos.append(LayerInfo("b4.conv1", c + RGB, 4))
                continue
            w0 = 2 * int(math.log2(res)) - 5  # this block's first style index
            cin = cfg.channels(res // 2)
            layers.append(StyleConv(cfg, cin, c, res, w0, up=True))
            layers.append(StyleConv(cfg, c, c, res, w0 + 1))
            infos += [
                LayerInfo(f"b{res}.conv0", c + RGB, res),
                LayerInfo(f"b{res}.conv1", c + RGB, res),
            ]
        layers.append(OutputRGB())
        infos.append(LayerInfo("output", RGB, cfg.resolution))
        mapping = Mapping(cfg)
        super().__init__([Styled(layer, mapping) for layer in layers], infos)
        self.cfg = cfg
        self.mapping = mapping
        self.model_id = model_id
        self.latent_shape = (cfg.num_ws, cfg.w_dim)
        self.edit_layer = default_edit_layer(cfg.resolution)
        self.truncation = 1.0

    def published_names(self) -> dict[str, str]:
        """NVIDIA's state-dict name (``G_ema.state_dict()``) → ours, for every tensor."""
        names = self.mapping_names()
        for i, (info, styled) in enumerate(zip(self.infos, self.layers, strict=True)):
            layer = styled.conv
            if not isinstance(layer, StyleConv):
                continue
            ours = f"layers.{i}.conv."
            theirs = f"synthesis.{info.name}."
            if layer.first:
                names["synthesis.b4.const"] = ours + "const"
            for key in ("weight", "bias", "noise_strength", "noise_const") + _AFFINE:
                names[theirs + key] = ours + key
            if layer.torgb is not None:
                block = info.name.split(".")[0]
                for key in ("weight", "bias") + _AFFINE:
                    names[f"synthesis.{block}.torgb.{key}"] = ours + "torgb." + key
        return names

    def describe_arch(self) -> str:
        c = self.cfg
        return (
            f"StyleGAN2 {c.resolution}px (channel_base {c.channel_base}, max "
            f"{c.channel_max}, {c.map_layers} mapping layers)"
        )


_AFFINE = ("affine.weight", "affine.bias")


def default_edit_layer(resolution: int) -> str:
    """The 32×32 block's output (16×16 below 256 px): object-sized, like ProGAN's 8×8 of 256."""
    res = 32 if resolution >= 256 else max(8, resolution // 8)
    return f"b{res}.conv1" if res > 4 else "b4.conv1"
