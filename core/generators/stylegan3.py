"""StyleGAN3 (-T and -R) behind the layered interface.

Architecture (Karras et al. 2021, "Alias-Free Generative Adversarial Networks", as
NVlabs/stylegan3 builds it):

- mapping: as StyleGAN2's (stylegan2.Mapping; 2 layers in the published configs) → W+
  [B, n_ws, w_dim] with n_ws = num_layers + 2.
- input: Fourier features. w₀ → (r_c, r_s, t_x, t_y) by an affine (bias [1, 0, 0, 0]),
  normalised so that (r_c, r_s) is a rotation; the rotation, then the translation, then the
  file's ``transform`` move the C₀ fixed frequencies and phases; each channel is
  sin(2π(⟨f, p⟩ + φ))·amplitude at the pixel centres p of a size₀² grid spanning size₀/s₀
  image units (amplitude damps frequencies beyond the band), then mixed by a C₀×C₀ matrix
  (/√C₀). [B, C₀, size₀, size₀].
- N + 1 synthesis layers L0 … LN (LN the ToRGB). Each: style s = A·w/√w_dim + b; the weight
  normalised per output channel and s per sample (their scale cancels in the demodulation;
  the reference normalises s over the batch, which changes nothing but the 1e-8), modulated,
  demodulated (not in ToRGB, whose style is ×1/√C_in), the input ×1/√magnitude_ema; a
  k×k conv padded k − 1 (k = 3 for -T, 1 for -R; 1 in ToRGB). Then the filtered leaky ReLU:
  + bias, zero-insert ×up, pad (negative pads crop), the up filter ×up², lrelu(0.2)·√2
  (ToRGB: linear, gain 1), clamp ±conv_clamp, the down filter, keep every down-th pixel
  (computed as transposed convolutions with stride up and convolutions with stride down,
  which skip the inserted zeros and the dropped pixels).
  Filters are the file's (separable 1-D Kaiser, or a radial 2-D jinc for -R's down filters;
  absent where a layer neither up- nor downsamples); they are convolutions (flipped).
- the image: LN's output × output_scale (0.25).

The geometry (cutoffs, stopbands, sampling rates, sizes with a margin of 10 samples each
side, channels, pads) follows from the constructor's arguments by the paper's geometric
progression, as the reference computes it (``SynthesisNetwork``).

Layers: ``input``, then ``L{i}_{size}_{channels}`` (the reference's names). A layer's
output is its feature map; all but the last two carry the margin: the image covers their
central sampling-rate² cells (``layer_mask`` maps a selection there). FP16 layers run in
float32. There is no noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import LayerInfo
from .stylegan2 import SQRT2, Affine, Mapping, StyleBased, Styled, default_edit_layer

CHANNEL_GROUP = 16  # channels per filtered-lrelu call (memory: see SynthesisLayer.forward)


@dataclass(frozen=True)
class StyleGAN3Config:
    resolution: int = 1024
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 2
    lr_multiplier: float = 0.01  # the mapping layers'
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    num_fp16_res: int = 4  # recorded; every layer runs in float32
    conv_kernel: int = 3  # 1 for -R
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False  # True for -R
    conv_clamp: float | None = 256.0

    def __post_init__(self):
        if self.num_layers <= self.num_critical:
            raise ValueError(f"num_layers {self.num_layers} ≤ num_critical {self.num_critical}")

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @property
    def variant(self) -> str:
        return "R" if self.conv_kernel == 1 and self.use_radial_filters else "T"


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's geometry (what the reference derives in its constructors)."""

    name: str
    cin: int
    cout: int
    kernel: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # x before, x after, y before, y after
    size: int
    sampling_rate: int
    torgb: bool


@dataclass(frozen=True)
class Geometry:
    channels: list[int]
    sizes: list[int]
    sampling_rates: list[int]
    cutoffs: list[float]
    layers: list[LayerSpec]


def geometry(cfg: StyleGAN3Config) -> Geometry:
    """Cutoffs, sampling rates, sizes and channels per layer (float64, as the reference)."""
    n, res = cfg.num_layers, cfg.resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = 3
    layers = []
    for i in range(n + 1):
        prev, torgb = max(i - 1, 0), i == n
        tmp_rate = max(rates[prev], rates[i]) * (1 if torgb else cfg.lrelu_upsampling)
        k = 1 if torgb else cfg.conv_kernel
        up, down = int(np.rint(tmp_rate / rates[prev])), int(np.rint(tmp_rate / rates[i]))
        up_taps = cfg.filter_size * up if up > 1 and not torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not torgb else 1
        # Output size before downsampling, less the input's after upsampling, plus what
        # the two filters take away; the half-sample shift of the symmetric interpretation.
        pad_total = (int(sizes[i]) - 1) * down + 1 - (int(sizes[prev]) + k - 1) * up
        pad_total += up_taps + down_taps - 2
        lo = (pad_total + up) // 2
        layers.append(
            LayerSpec(
                name=f"L{i}_{int(sizes[i])}_{int(channels[i])}",
                cin=int(channels[prev]),
                cout=int(channels[i]),
                kernel=k,
                up=up,
                down=down,
                up_taps=up_taps,
                down_taps=down_taps,
                down_radial=cfg.use_radial_filters and i < n - cfg.num_critical,
                padding=(lo, pad_total - lo, lo, pad_total - lo),
                size=int(sizes[i]),
                sampling_rate=int(rates[i]),
                torgb=torgb,
            )
        )
    return Geometry(
        [int(c) for c in channels],
        [int(s) for s in sizes],
        [int(r) for r in rates],
        [float(c) for c in cutoffs],
        layers,
    )


def fir(x: torch.Tensor, f: torch.Tensor | None, down: int = 1, gain: float = 1.0):
    """Convolve each channel with a filter (1-D: separable, along x then y; 2-D), keeping
    every ``down``-th output: [B, C, H, W] → [B, C, (H − taps + 1)/down, …]."""
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    c = x.shape[1]
    f = f.flip(list(range(f.ndim))).to(x)  # a convolution, not a correlation
    if f.ndim == 2:
        w = (f * gain)[None, None].expand(c, 1, *f.shape)
        return F.conv2d(x, w, stride=down, groups=c)
    f = f * math.sqrt(gain)
    x = F.conv2d(x, f[None, None, None].expand(c, 1, 1, -1), stride=(1, down), groups=c)
    return F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), stride=(down, 1), groups=c)


def upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding) -> torch.Tensor:
    """Zero-insert ×up, pad (x0, x1, y0, y1; negative crops), convolve with f ×up²:
    [B, C, H, W] → [B, C, H·up + y0 + y1 − taps + 1, …]. A separable f runs as two
    transposed convolutions (stride up), which skip the inserted zeros' products."""
    if f is None or f.ndim == 2 or up == 1:
        return fir(F.pad(zero_insert(x, up), padding), f, gain=up**2)
    c, taps = x.shape[1], f.shape[0]
    f = (f * up).to(x)
    for dim, (p0, p1) in ((3, padding[:2]), (2, padding[2:])):
        n = x.shape[dim]
        shape = (c, 1, 1, taps) if dim == 3 else (c, 1, taps, 1)
        stride = (1, up) if dim == 3 else (up, 1)
        y = F.conv_transpose2d(
            x, f.reshape(1, 1, *shape[2:]).expand(shape), stride=stride, groups=c
        )
        start, size = taps - 1 - p0, n * up + p0 + p1 - taps + 1  # the valid part
        pads = (-start, start + size - y.shape[dim])
        x = F.pad(y, pads if dim == 3 else (0, 0, *pads))
    return x


def zero_insert(x: torch.Tensor, up: int) -> torch.Tensor:
    """[B, C, H, W] → [B, C, H·up, W·up], each sample followed by up − 1 zeros."""
    if up == 1:
        return x
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, h, up, w, up)
    out[:, :, :, 0, :, 0] = x
    return out.reshape(b, c, h * up, w * up)


class SynthesisInput(nn.Module):
    """W+ → Fourier features [B, C₀, size₀, size₀] (see the module docstring)."""

    def __init__(self, cfg: StyleGAN3Config, geo: Geometry):
        super().__init__()
        c = geo.channels[0]
        self.size, self.rate, self.bandwidth = geo.sizes[0], geo.sampling_rates[0], geo.cutoffs[0]
        self.affine = Affine(cfg.w_dim, 4)
        self.weight = nn.Parameter(torch.randn(c, c))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(c, 2))
        self.register_buffer("phases", torch.zeros(c))

    def forward(self, x: torch.Tensor | None, ws: torch.Tensor) -> torch.Tensor:
        t = self.affine(ws[:, 0])  # (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        b = len(t)
        rot = torch.eye(3, device=t.device).repeat(b, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=t.device).repeat(b, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ shift @ self.transform  # [B, 3, 3]: the image's inverse transform
        phases = self.phases + (self.freqs @ m[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = self.freqs @ m[:, :2, :2]  # [B, C, 2]
        amp = 1 - (freqs.norm(dim=2) - self.bandwidth) / (self.rate / 2 - self.bandwidth)
        amp = amp.clamp(0, 1)
        # Pixel centres in image units: (i + ½ − size/2) / rate, x along width, y along height.
        p = (torch.arange(self.size, device=t.device, dtype=t.dtype) + 0.5) * 2 / self.size - 1
        p = p * (0.5 * self.size / self.rate)
        arg = p[None, None, :, None] * freqs[:, None, None, :, 0]  # [B, 1, W, C] (x)
        arg = arg + p[None, :, None, None] * freqs[:, None, None, :, 1]  # [B, H, W, C]
        x = torch.sin((arg + phases[:, None, None]) * (2 * math.pi)) * amp[:, None, None]
        x = x @ (self.weight / math.sqrt(self.weight.shape[0])).t()
        return x.permute(0, 3, 1, 2).contiguous()


class SynthesisLayer(nn.Module):
    """One StyleGAN3 layer: modulated conv, then the filtered leaky ReLU (module docstring).

    [B, C_in, size_in, size_in] → [B, C_out, size, size]; its style is ws[:, w_index].
    """

    def __init__(self, cfg: StyleGAN3Config, spec: LayerSpec, w_index: int, output_scale=1.0):
        super().__init__()
        self.spec, self.w_index, self.output_scale = spec, w_index, output_scale
        self.clamp = cfg.conv_clamp
        k = spec.kernel
        self.affine = Affine(cfg.w_dim, spec.cin)
        self.weight = nn.Parameter(torch.randn(spec.cout, spec.cin, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.cout))
        self.register_buffer("magnitude_ema", torch.ones(()))
        # None where a layer does not resample (then absent from the state, as in the file)
        up = torch.zeros(spec.up_taps) if spec.up_taps > 1 else None
        down = torch.zeros((spec.down_taps,) * (2 if spec.down_radial else 1))
        self.register_buffer("up_filter", up)
        self.register_buffer("down_filter", down if spec.down_taps > 1 else None)

    def forward(self, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        s = self.affine(ws[:, self.w_index])  # [B, C_in]
        gain = self.magnitude_ema.rsqrt()
        if spec.torgb:
            s = s / math.sqrt(spec.cin * spec.kernel**2)
            w, demod = self.weight, None
        else:  # scale-free normalisations (kept for the 1e-8 below), then demodulation
            w = self.weight * self.weight.square().mean((1, 2, 3), keepdim=True).rsqrt()
            s = s * s.square().mean(1, keepdim=True).rsqrt()
            demod = (w.square()[None] * s.square()[:, None, :, None, None]).sum((2, 3, 4)) + 1e-8
            demod = demod.rsqrt()  # [B, C_out]
        x = F.conv2d(x * (s * gain)[:, :, None, None], w, padding=spec.kernel - 1)
        if demod is not None:
            x = x * demod[:, :, None, None]
        x = x + self.bias[:, None, None]

        # The filtered lrelu's maps are up² times the layer's, and it acts per channel: run
        # it on groups of channels, and for gradients keep only each group's input,
        # computing the rest again in the backward pass (G_F at 1024² needs > 22 GiB
        # otherwise; this costs one more forward of the activation).
        def act(group: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() and spec.up > 1:
                return checkpoint(self.filtered_lrelu, group, use_reentrant=False)
            return self.filtered_lrelu(group)

        x = torch.cat([act(g) for g in x.split(CHANNEL_GROUP, dim=1)], dim=1)
        return x * self.output_scale if self.output_scale != 1 else x

    def filtered_lrelu(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample, leaky ReLU, clamp, downsample (bias already added): the size change."""
        spec = self.spec
        x = upsample(x, self.up_filter, spec.up, spec.padding)
        x = F.leaky_relu(x, 0.2) * SQRT2 if not spec.torgb else x
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return fir(x, self.down_filter, down=spec.down)


class StyleGAN3(StyleBased):
    """A StyleGAN3 generator, W+ [B, num_layers + 2, w_dim] → RGB [B, 3, R, R]."""

    # The margins and the Fourier input are frame-sized: G_F runs on whole frames only.
    local_layers = False

    def __init__(self, cfg: StyleGAN3Config, model_id: str = "stylegan3"):
        geo = geometry(cfg)
        mods: list[nn.Module] = [SynthesisInput(cfg, geo)]
        infos = [LayerInfo("input", geo.channels[0], geo.sizes[0])]
        for i, spec in enumerate(geo.layers):
            scale = cfg.output_scale if spec.torgb else 1.0
            mods.append(SynthesisLayer(cfg, spec, i + 1, scale))
            infos.append(LayerInfo(spec.name, spec.cout, spec.size))
        mapping = Mapping(cfg)
        super().__init__([Styled(m, mapping) for m in mods], infos)
        self.cfg, self.geometry = cfg, geo
        self.mapping = mapping
        self.model_id = model_id
        self.latent_shape = (cfg.num_ws, cfg.w_dim)
        self.edit_layer = self._default_edit_layer()
        self.truncation = 1.0

    def _default_edit_layer(self) -> str:
        """As StyleGAN2's: the last layer whose sampling rate is at most that block's
        resolution (32 for models of 256 px and more)."""
        target = int(default_edit_layer(self.cfg.resolution).split(".")[0][1:])
        fits = [s.name for s in self.geometry.layers[:-1] if s.sampling_rate <= target]
        return fits[-1] if fits else self.geometry.layers[0].name

    def _margin(self, layer: int) -> tuple[int, int]:
        """(margin, sampling rate) of layer ``layer``'s map, in cells: the image covers the
        central rate² cells of its size² (size = rate + 2 × margin; no margin in the last
        two layers)."""
        size = self.infos[layer].size
        rate = self.geometry.sampling_rates[max(layer - 1, 0)]  # layer 0 is the input
        return (size - rate) // 2, rate

    def layer_mask(self, mask: torch.Tensor, layer: int) -> torch.Tensor:
        """A selection [B, 1, H, W] in image pixels → the same on the frame of layer
        ``layer``'s map: the image covers its central sampling-rate² cells, the margin
        around them is unselected."""
        margin, rate = self._margin(layer)
        if not margin:
            return mask
        pad = round(margin * mask.shape[-1] / rate)
        return F.pad(mask, (pad, pad, pad, pad))

    def image_cells(self, acts: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer``'s map [B, C, size, size] → its central [B, C, rate, rate], the
        cells the image covers (the margin is outside the image)."""
        margin, rate = self._margin(layer)
        return acts[..., margin : margin + rate, margin : margin + rate] if margin else acts

    # -- the published layout ---------------------------------------------------------
    def published_names(self) -> dict[str, str]:
        names = self.mapping_names()
        for i, (info, styled) in enumerate(zip(self.infos, self.layers, strict=True)):
            theirs = "synthesis.input." if i == 0 else f"synthesis.{info.name}."
            for key in styled.conv.state_dict():
                names[theirs + key] = f"layers.{i}.conv.{key}"
        return names

    def describe_arch(self) -> str:
        c = self.cfg
        return (
            f"StyleGAN3-{c.variant} {c.resolution}px (channel_base {c.channel_base}, max "
            f"{c.channel_max}, {c.num_layers} layers, {c.map_layers} mapping layers)"
        )
