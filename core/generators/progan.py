"""Progressive GAN generators in the GAN Dissection layout (Karras et al., converted to torch).

Layers ``layer1`` … ``layer{2k}`` then ``output_{R}x{R}``; each conv layer is
PixelNorm → [2× nearest upsample, odd layers from layer3] → conv (no bias) → WScale →
LeakyReLU(0.2). ``layer1`` is a 4×4 conv with padding 3 on z seen as 512×1×1, so its
output is 512×4×4. The output layer is PixelNorm → 1×1 conv → WScale(gain 1).

Checkpoints come in two key layouts with identical tensors: ``layerN.conv.weight`` /
``layerN.wscale.b`` / ``output_RxR.*`` (current) and ``features.{N-1}.*`` / ``output.*``
(older files, which may also carry ``wscale.scale``: that model stored its scale as a
parameter; it is ignored and recomputed, as gandissect's loader does). Both load to the same
generator.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import LayeredGenerator, LayerInfo, ModelError
from .checkpoint import load_state_dict
from .download import ensure_weights, hash_prefix
from .registry import ModelSpec

log = logging.getLogger("ganpaint.generators")
LATENT_DIM = 512
EPS = 1e-8  # PixelNorm's ε, as in the original

# Feature channels at 4×4, 8×8, … R×R; two conv layers per resolution. Karras' fmap_base
# is 4096 for the 256×256 LSUN models (18.3 M parameters) and 8192 for CelebA-HQ 1024.
CHANNELS: dict[int, tuple[int, ...]] = {
    256: (512, 512, 512, 256, 128, 64, 32),
    1024: (512, 512, 512, 512, 256, 128, 64, 32, 16),
}

# The GAN Dissection downloads (the file names as in gandissect's and ganseeing's loaders).
# The newer host (davidbau/dissect) comes first; the original gandissect.csail.mit.edu one,
# reported dead since 2023 (CSAILVision/gandissect#25), stays as a fallback. Users add
# mirrors in config (download.py).
BASE_URLS = ("https://dissect.csail.mit.edu/models/", "http://gandissect.csail.mit.edu/models/")
_PUBLISHED = {  # model id suffix → (file name, resolution)
    "churchoutdoor": ("proggan_churchoutdoor-7e701dd5.pth", 256),
    "bedroom": ("proggan_bedroom-d8a89ff1.pth", 256),
    "kitchen": ("proggan_kitchen-67f1e16c.pth", 256),
    "livingroom": ("proggan_livingroom-5ef336dd.pth", 256),
    "diningroom": ("proggan_diningroom-3aa0ab80.pth", 256),
    "conferenceroom": ("proggan_conferenceroom-21e85882.pth", 256),
    "restaurant": ("proggan_restaurant-b8578299.pth", 256),
    # CelebA-HQ is Karras' 1024×1024 face model (latent-composition loads it at outdim 1024).
    "celebhq": ("proggan_celebhq-620d161c.pth", 1024),
}


def _spec(name: str, file_name: str, resolution: int) -> ModelSpec:
    source = "GAN Dissection (Bau et al. 2019), ProGAN (Karras et al. 2018) converted to torch"
    return ModelSpec(
        f"progan-{name}",
        f"progan{resolution}",
        resolution,
        source,
        file_name,
        tuple(b + file_name for b in BASE_URLS),
        hash_prefix(file_name),
    )


PROGAN_SPECS: dict[str, ModelSpec] = {
    s.id: s for s in (_spec(n, f, r) for n, (f, r) in _PUBLISHED.items())
}


# -- layers ------------------------------------------------------------------------------
def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """x / √(mean over channels of x² + ε) at every pixel: [B, C, H, W] → same."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPS)


class WScale(nn.Module):
    """Equalised learning rate: output = conv(x) · gain/√fan_in + b.

    The scale is a constant (not in the state dict); only the bias ``b`` [C] is stored.
    """

    def __init__(self, channels: int, fan_in: int, gain: float):
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.zeros(channels))


class ConvBlock(nn.Module):
    """PixelNorm → [2× nearest upsample] → k×k conv → WScale(√2) → LeakyReLU(0.2).

    [B, C_in, H, W] → [B, C_out, H', W'] with H' = 2H when upsampling, H + 2·pad − k + 1
    otherwise. ``layer1`` alone takes z as [B, 512] (seen as 512×1×1).
    """

    def __init__(self, cin: int, cout: int, kernel: int, padding: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.padding = padding
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        # gandissect writes gain √2/k with fan_in = C_in: the same number as √2/√(C_in·k²).
        self.wscale = WScale(cout, cin * kernel * kernel, math.sqrt(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[:, :, None, None]
        x = pixel_norm(x)  # before the upsample: same result, a quarter of the work
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        # Scale folded into the weight and bias into the conv: one pass over the activations.
        x = F.conv2d(x, self.conv.weight * self.wscale.scale, self.wscale.b, padding=self.padding)
        return F.leaky_relu(x, 0.2, inplace=True)  # x is our own fresh tensor


class OutputBlock(nn.Module):
    """PixelNorm → 1×1 conv to RGB → WScale(gain 1) [→ clamp]: [B, C, R, R] → [B, 3, R, R].

    Unclamped by default (as gandissect): values stay near [-1, 1] and gradients stay alive
    for inversion; ``clamp`` cuts them to [-1, 1].
    """

    def __init__(self, cin: int, clamp: bool = False):
        super().__init__()
        self.clamp = clamp
        self.conv = nn.Conv2d(cin, 3, 1, bias=False)
        self.wscale = WScale(3, cin, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(pixel_norm(x), self.conv.weight * self.wscale.scale, self.wscale.b)
        return x.clamp(-1.0, 1.0) if self.clamp else x


class ProGAN(LayeredGenerator):
    """A ProGAN generator, z [B, 512] ~ N(0, I) → RGB [B, 3, R, R]."""

    latent_shape = (LATENT_DIM,)
    edit_layer = "layer4"  # 512×8×8, the layer GANPaint edits

    def __init__(self, model_id: str = "progan", resolution: int = 256, clamp: bool = False):
        if resolution not in CHANNELS:
            raise ValueError(f"no ProGAN layout for {resolution}×{resolution}")
        chans = CHANNELS[resolution]
        layers: list[nn.Module] = [
            ConvBlock(LATENT_DIM, chans[0], 4, 3, upsample=False),
            ConvBlock(chans[0], chans[0], 3, 1, upsample=False),
        ]
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [
                ConvBlock(cin, cout, 3, 1, upsample=True),
                ConvBlock(cout, cout, 3, 1, upsample=False),
            ]
        layers.append(OutputBlock(chans[-1], clamp))
        infos = [
            LayerInfo(f"layer{i + 1}", chans[i // 2], 4 * 2 ** (i // 2))
            for i in range(2 * len(chans))
        ]
        infos.append(LayerInfo(f"output_{resolution}x{resolution}", 3, resolution))
        super().__init__(layers, infos)
        self.model_id = model_id

    def published_shapes(self) -> dict[str, tuple[int, ...]]:
        """Checkpoint key (current layout) → tensor shape, e.g. ``layer4.conv.weight``."""
        return {
            f"{info.name}.{key}": tuple(p.shape)
            for info, layer in zip(self.infos, self.layers, strict=True)
            for key, p in layer.named_parameters()
        }

    def load_published(self, sd: dict[str, torch.Tensor], source: str | Path) -> None:
        """Load a checkpoint in either published layout; every problem is a ModelError.

        ``*.wscale.scale`` entries (older files stored the scale as a parameter) are
        ignored and the scale recomputed, as gandissect's loader does; one that disagrees
        with the recomputed scale by over 1 % is logged.
        """
        sd = to_current_layout(sd, self.resolution, source)
        stored = {k: sd.pop(k) for k in [k for k in sd if k.endswith(".wscale.scale")]}
        self._check_stored_scales(stored, source)
        expected = self.published_shapes()
        _check_keys(sd, expected, self.resolution, source)
        index = {info.name: i for i, info in enumerate(self.infos)}
        mapped = {}
        for key, value in sd.items():
            name, rest = key.split(".", 1)
            mapped[f"layers.{index[name]}.{rest}"] = value
        self.load_state_dict(mapped, strict=True)

    def _check_stored_scales(self, stored: dict[str, torch.Tensor], source: str | Path) -> None:
        index = {info.name: i for i, info in enumerate(self.infos)}
        for key, value in stored.items():
            name = key.split(".", 1)[0]
            if name not in index or value.numel() != 1 or not value.is_floating_point():
                continue  # _check_keys reports unknown layers; odd shapes are ignored
            ours = self.layers[index[name]].wscale.scale
            got = float(value.reshape(()))
            if not math.isfinite(got) or abs(got - ours) > 0.01 * abs(ours):
                log.warning(
                    "%s: %s = %.6g differs from the recomputed scale %.6g; ignored (as "
                    "gandissect does)",
                    source,
                    key,
                    got,
                    ours,
                )


class ProGAN256(ProGAN):
    """The 256×256 LSUN scene generators of GAN Dissection: 15 layers, 18.3 M parameters."""

    def __init__(self, model_id: str = "progan256", clamp: bool = False):
        super().__init__(model_id, 256, clamp)


# -- checkpoints -------------------------------------------------------------------------
def to_current_layout(
    sd: dict[str, torch.Tensor], resolution: int, source: str | Path
) -> dict[str, torch.Tensor]:
    """Rename old ``features.{i}.*`` / ``output.*`` keys to ``layer{i+1}.*`` /
    ``output_RxR.*``; a dict already in the current layout passes through unchanged."""
    if not any(k.startswith(("features.", "output.")) for k in sd):
        return dict(sd)
    out = {}
    for key, value in sd.items():
        parts = key.split(".", 2)
        if parts[0] == "features" and len(parts) == 3 and parts[1].isdigit():
            new = f"layer{int(parts[1]) + 1}.{parts[2]}"
        elif parts[0] == "output" and len(parts) >= 2:
            new = f"output_{resolution}x{resolution}.{key.split('.', 1)[1]}"
        else:
            raise ModelError(
                f"{source}: key {key!r} among old-layout features.*/output.* "
                "keys; mixed layouts are not supported"
            )
        out[new] = value
    return out


def _check_keys(
    sd: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    resolution: int,
    source: str | Path,
) -> None:
    n_conv = max((int(m.group(1)) for k in sd if (m := re.match(r"layer(\d+)\.", k))), default=0)
    n_want = sum(1 for k in expected if k.startswith("layer") and k.endswith(".conv.weight"))
    if n_conv and n_conv != n_want and n_conv % 2 == 0:
        r = 4 * 2 ** (n_conv // 2 - 1)
        raise ModelError(
            f"{source} holds a {r}×{r} ProGAN ({n_conv} conv layers); "
            f"this model is {resolution}×{resolution} ({n_want})"
        )
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(
            f"{source}: missing {missing[0]}{more}; not a ProGAN-{resolution} "
            "checkpoint in the GAN Dissection layout"
        )
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ModelError(f"{source}: unexpected key {unexpected[0]!r}{more}")
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ModelError(
                f"{source}: {key} has shape {list(sd[key].shape)}, expected {list(shape)}"
            )
        if not sd[key].is_floating_point():
            raise ModelError(f"{source}: {key} holds {sd[key].dtype}, not floats")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ProGAN .pth: a plain state dict (the published files), or one nested
    under ``state_dict`` (which gandissect's loader also accepts)."""
    try:
        return load_state_dict(path)
    except ModelError as plain:
        try:
            return load_state_dict(path, key="state_dict")
        except ModelError:
            raise plain from None


def load_progan(spec: ModelSpec, checkpoint: Path | None = None, download: bool = True) -> ProGAN:
    """Build the spec's ProGAN and load its weights.

    ``checkpoint`` is any file in either published layout (not hash-checked); without it
    the weights come from the user cache (``paths.models_dir()``), downloaded and
    SHA-256-checked when missing and ``download`` is true (download.py).
    """
    if not spec.family.startswith("progan") or spec.resolution not in CHANNELS:
        raise ModelError(
            f"{spec.id} ({spec.family}, {spec.resolution}px) is not a ProGAN "
            f"this loader knows ({', '.join(map(str, CHANNELS))}px)"
        )
    if checkpoint is not None:
        path = Path(checkpoint)
    else:
        path = ensure_weights(spec.id, spec.file_name, spec.urls, download)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    gen = ProGAN256(spec.id) if spec.resolution == 256 else ProGAN(spec.id, spec.resolution)
    gen.load_published(read_checkpoint(path), source=path)
    return gen
