"""Run G′_F on a window of the frame instead of the whole frame.

Every layer of G_F is local: a conv (or transposed conv) with a small kernel, a per-pixel
normalisation, a nearest/strided 2× upsample. A window of a layer's output therefore depends
only on a window of its input, larger by the kernel's reach. ``plan`` walks G_F backwards
from a target window of the RGB output and finds the window each layer must compute;
``run_window`` then runs the layers on those crops. Windows that touch the frame edge keep
the frame's own zero padding, so the target window equals the full computation exactly.

Windows are ``(y0, y1, x0, x1)`` half-open boxes in the coordinates of the layer they live
in. Conv layers are assumed centred (padding ≈ kernel/2), as in every generator we ship.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .generators.base import LayeredGenerator

Window = tuple[int, int, int, int]


def full(size: int) -> Window:
    return (0, size, 0, size)


def area(w: Window) -> int:
    return max(0, w[1] - w[0]) * max(0, w[3] - w[2])


def crop(t: torch.Tensor, w: Window) -> torch.Tensor:
    """t[..., y0:y1, x0:x1]."""
    return t[..., w[0] : w[1], w[2] : w[3]]


def shift(w: Window, inner: Window) -> Window:
    """``inner`` (global coordinates) relative to the origin of ``w``."""
    return (inner[0] - w[0], inner[1] - w[0], inner[2] - w[2], inner[3] - w[2])


def grow(w: Window, m: int, size: int) -> Window:
    """w dilated by m on every side, clipped to a size×size frame."""
    return (max(0, w[0] - m), min(size, w[1] + m), max(0, w[2] - m), min(size, w[3] + m))


def bbox(mask: torch.Tensor) -> Window | None:
    """Bounding box of the True pixels of a [..., H, W] bool tensor; None when empty."""
    m = mask.reshape(-1, *mask.shape[-2:]).any(0)
    ys, xs = m.any(1).nonzero(), m.any(0).nonzero()
    if len(ys) == 0:
        return None
    return (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)


def scale_window(w: Window, src: int, dst: int) -> Window:
    """A window of a src×src map as the covering window of a dst×dst map."""
    f = dst / src
    return (math.floor(w[0] * f), math.ceil(w[1] * f), math.floor(w[2] * f), math.ceil(w[3] * f))


def halo(layer: nn.Module) -> int:
    """Output pixels at a crop's edge a layer can get wrong (its reach): half of each conv's
    kernel, summed over the convs it chains (exact for centred convs and the k=4, stride-2,
    padding-1 transposed conv)."""
    ks = [
        max(m.kernel_size) for m in layer.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    return sum(k // 2 for k in ks)


def plan(gen: LayeredGenerator, h: int, target: Window) -> list[Window]:
    """Windows to compute for G_F = layers[h:] so that ``target`` of the output is exact.

    Returns n − h + 1 windows: [0] of z_h (the split), [j] of layer h+j−1's output; the last
    is ``target``.
    """
    sizes = [gen.infos[i].size for i in range(h - 1, gen.n_layers)]  # input of layer h first
    if not gen.local_layers:  # whole frames (sizes need not be multiples: StyleGAN3)
        return [full(s) for s in sizes]
    wins = [target]
    for j in range(gen.n_layers - 1, h - 1, -1):
        s_in, s_out = sizes[j - h], sizes[j - h + 1]
        grown = grow(wins[0], halo(gen.layers[j]), s_out)
        wins.insert(0, scale_window(grown, s_out, s_in))
    return wins


def interior(gen: LayeredGenerator, h: int, target: Window) -> list[Window]:
    """Windows of the perturbed layers (h .. n−2) whose every output pixel only reaches
    ``target``: changing δ there changes nothing outside target. Frame edges stay put."""
    if not gen.local_layers:
        return [full(gen.infos[i].size) for i in range(h, gen.n_layers - 1)]
    res = gen.resolution
    wins, cur, size = [], target, res
    for j in range(gen.n_layers - 1, h, -1):  # from the output back to layer h+1's input
        m = halo(gen.layers[j])
        cur = (
            cur[0] + m if cur[0] > 0 else 0,
            cur[1] - m if cur[1] < size else size,
            cur[2] + m if cur[2] > 0 else 0,
            cur[3] - m if cur[3] < size else size,
        )
        s_in = gen.infos[j - 1].size
        f = size // s_in
        cur = (-(-cur[0] // f), cur[1] // f, -(-cur[2] // f), cur[3] // f)  # inner cover
        size = s_in
        wins.insert(0, cur)
    return wins


def run_window(
    gen: LayeredGenerator,
    x: torch.Tensor,
    wins: Sequence[Window],
    deltas: Sequence[torch.Tensor] = (),
    start: int | None = None,
) -> torch.Tensor:
    """Layers start .. start + len(wins) − 2 on windows (by default the rest of G_F, ending
    at the output): x [B, C, H, W] is layer ``start``'s input, full or already cropped to
    wins[0] → [B, C', wins[-1]]. deltas[j] is δ of layer start + j cropped to wins[j + 1]
    (applied as ⊙ (1 + δ)); fewer deltas than layers leave the rest unperturbed.
    """
    start = gen.n_layers - len(wins) + 1 if start is None else start
    size0 = gen.infos[start - 1].size
    # Full frame → crop it; anything else is already the crop. Both sides must be checked:
    # a wide window spans the full width but not the full height.
    x = crop(x, wins[0]) if tuple(x.shape[-2:]) == (size0, size0) else x
    for j, layer in enumerate(gen.layers[start : start + len(wins) - 1]):
        s = gen.infos[start + j].size // gen.infos[start + j - 1].size
        y = layer(x)
        origin = (wins[j][0] * s, 0, wins[j][2] * s, 0)
        x = crop(y, shift(origin, wins[j + 1]))
        if j < len(deltas):
            x = x * (1 + deltas[j])
    return x
