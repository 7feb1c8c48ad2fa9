"""The one layered interface every generator implements.

A generator G = g_n ∘ … ∘ g_1 is an ordered list of named layers. The method needs to run
any contiguous range of them (G_H up to the split, G_F after it), read the output of any
layer, and know each layer's output shape. Layer positions are 0-based here: layer i is
``layers[i]``; ``run(x, a, b)`` applies ``layers[a:b]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ModelError(Exception):
    """A model cannot be found, verified or loaded. The message is one line for the user."""


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    size: int  # square output resolution


class LayeredGenerator(nn.Module):
    """An ordered list of named layers mapping a latent z to an RGB image in [-1, 1].

    Subclasses build ``layers`` and ``infos`` (one LayerInfo per layer) and set
    ``latent_shape`` and ``edit_layer``.
    """

    model_id: str
    latent_shape: tuple[int, ...]
    edit_layer: str
    # Whether a window of each layer's output depends only on a window of its input (the
    # fast path's windows, region.py); False runs G_F on whole frames.
    local_layers: bool = True

    def __init__(self, layers: list[nn.Module], infos: list[LayerInfo]):
        super().__init__()
        if len(layers) != len(infos):
            raise ValueError("one LayerInfo per layer")
        self.layers = nn.ModuleList(layers)
        self.infos = list(infos)

    # -- structure ---------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def layer_names(self) -> list[str]:
        return [i.name for i in self.infos]

    @property
    def resolution(self) -> int:
        return self.infos[-1].size

    def index(self, layer: str | int) -> int:
        """0-based position of a layer given by name or position."""
        if isinstance(layer, int):
            if not -self.n_layers <= layer < self.n_layers:
                raise IndexError(f"layer {layer} out of range 0..{self.n_layers - 1}")
            return layer % self.n_layers
        try:
            return self.layer_names.index(layer)
        except ValueError:
            raise KeyError(
                f"unknown layer {layer!r}; layers: {', '.join(self.layer_names)}"
            ) from None

    def out_shape(self, layer: str | int) -> tuple[int, int, int]:
        """(C, H, W) of a layer's output."""
        info = self.infos[self.index(layer)]
        return (info.channels, info.size, info.size)

    @property
    def edit_index(self) -> int:
        return self.index(self.edit_layer)

    def default_split(self) -> int:
        """h such that G_H = layers[:h], G_F = layers[h:].

        The paper's h = n − 5, clamped so the edit layer lies inside G_H and G_F keeps at
        least one perturbed layer before the RGB output.
        """
        return min(max(self.n_layers - 5, self.edit_index + 1), self.n_layers - 1)

    # -- running -----------------------------------------------------------------------
    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Apply layers[start:stop] to x (a latent when start == 0, else a feature map)."""
        stop = self.n_layers if stop is None else stop
        for layer in self.layers[start:stop]:
            x = layer(x)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.run(z)

    def features(self, z: torch.Tensor, layer: str | int) -> torch.Tensor:
        """Output of one layer for latent z: [B, C, H, W]."""
        return self.run(z, 0, self.index(layer) + 1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents from the prior, [n, *latent_shape], on the model's device."""
        device = next(self.parameters()).device
        z = torch.randn((n, *self.latent_shape), generator=generator)
        return z.to(device)

    def bind(self, latent: torch.Tensor) -> LayeredGenerator:
        """This generator with its later layers' side inputs taken from ``latent``
        [1 or B, *latent_shape]. Layers of ProGAN and the DCGAN read only the tensor they
        are given: they return themselves. StyleGAN's layers also need their styles: a view
        with the latent's styles fixed (stylegan2.py)."""
        return self

    def layer_mask(self, mask: torch.Tensor, layer: int) -> torch.Tensor:
        """A selection [B, 1, H, W] over the image, in the frame of layer ``layer``'s map
        (what edit.edit_mask pools to the map's cells). Here the map covers the image
        exactly: the mask itself. StyleGAN3's maps carry a margin (stylegan3.py)."""
        return mask

    def image_cells(self, acts: torch.Tensor, layer: int) -> torch.Tensor:
        """The cells of layer ``layer``'s map [B, C, h, w] that the image covers: what
        statistics over the image (concept ranking, dissection, discovery) read. Here the
        map covers the image exactly: all of it. StyleGAN3's drop their margin."""
        return acts

    def describe(self) -> dict:
        return {
            "id": self.model_id,
            "resolution": self.resolution,
            "edit_layer": self.edit_layer,
            "split": self.default_split(),
            "layers": [
                {"name": i.name, "channels": i.channels, "size": i.size} for i in self.infos
            ],
        }


def freeze(gen: LayeredGenerator) -> LayeredGenerator:
    """Eval mode, no gradients: G and G_H stay frozen throughout the method."""
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen
