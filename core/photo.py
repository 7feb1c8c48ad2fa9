"""Real photos are not 64×64: crop a square around the selection and resize it (the way
back, at the photo's resolution, is composite.py).

Arrays here are numpy, [H, W, C] with C = 3 or 4 (RGBA keeps its alpha untouched), dtype
uint8 or uint16; masks are [H, W] uint8 (0 = not selected, 255 = fully selected, values in
between = feathered). Only pixels where the selection is non-zero ever change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DTYPE_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class PhotoError(ValueError):
    """Bad photo or mask input; the message is one line for the user."""


@dataclass(frozen=True)
class Box:
    """A square region (x0, y0, size); it may extend past the image borders."""

    x0: int
    y0: int
    size: int


def check_photo(photo: np.ndarray, mask: np.ndarray | None = None) -> None:
    if photo.ndim != 3 or photo.shape[2] not in (3, 4):
        raise PhotoError(f"photo must be H×W×3 (RGB) or H×W×4 (RGBA), got shape {photo.shape}")
    if photo.dtype not in DTYPE_MAX:
        raise PhotoError(f"photo must be 8- or 16-bit, got {photo.dtype}")
    if min(photo.shape[:2]) < 1:
        raise PhotoError("photo is empty")
    if mask is not None:
        if mask.shape != photo.shape[:2]:
            raise PhotoError(
                f"mask size {mask.shape[1]}×{mask.shape[0]} differs from image size "
                f"{photo.shape[1]}×{photo.shape[0]}"
            )
        if mask.dtype != np.uint8:
            raise PhotoError(f"mask must be 8-bit, got {mask.dtype}")
        if not mask.any():
            raise PhotoError("mask is empty: select the region to edit")


def selection_box(mask: np.ndarray, context: float = 0.5, min_size: int = 64) -> Box:
    """Square around the selection's bounding box, with ``context`` × its side on each side."""
    win = mask_window(mask)  # not np.nonzero: 16 bytes per selected pixel
    if win is None:
        raise PhotoError("mask is empty: select the region to edit")
    y0, y1, x0, x1 = win
    side = max(y1 - y0, x1 - x0)
    size = max(min_size, int(round(side * (1 + 2 * context))))
    # Never larger than the image needs: a square covering the whole photo suffices.
    size = min(size, max(mask.shape))
    size = max(size, side)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return Box(_place(cx, size, mask.shape[1]), _place(cy, size, mask.shape[0]), size)


def _place(center: float, size: int, extent: int) -> int:
    """Start of a window of ``size`` centred on ``center``, kept inside [0, extent) when it fits."""
    start = int(round(center - size / 2))
    if size <= extent:
        return min(max(start, 0), extent - size)
    return int(round((extent - size) / 2))  # larger than the image: centre it


def whole_box(height: int, width: int) -> Box:
    size = max(height, width)
    return Box(_place(width / 2, size, width), _place(height / 2, size, height), size)


def crop(arr: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels, [size, size, ...]; outside the image the border pixels repeat."""
    h, w = arr.shape[:2]
    ys = np.clip(np.arange(box.y0, box.y0 + box.size), 0, h - 1)
    xs = np.clip(np.arange(box.x0, box.x0 + box.size), 0, w - 1)
    return arr[ys[:, None], xs[None, :]]


def crop_scaled(arr: np.ndarray, box: Box, resolution: int) -> torch.Tensor:
    """resize(crop(arr, box) in [0, 1]) without the crop at full size: [1, C, R, R] float32
    (C = 1 for an [H, W] mask), contiguous, the very values of the one-piece computation.

    Shrinking (the usual case) goes one output row at a time: area resizing is adaptive
    average pooling, and a strip of exactly one output row's input rows pools to that row
    with the same sums in the same order. A whole-frame box of an 8192×2048 photo would
    otherwise take 8192² × 3 float32 twice (1.5 GiB) for a 64×64 result.
    """
    top = DTYPE_MAX[arr.dtype]
    size = box.size
    if size <= resolution:
        t = torch.from_numpy(crop(arr, box).astype(np.float32) / top)
        return resize(t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None], resolution)
    h, w = arr.shape[:2]
    ys = np.clip(np.arange(box.y0, box.y0 + size), 0, h - 1)
    xs = np.clip(np.arange(box.x0, box.x0 + size), 0, w - 1)
    out = torch.empty(1, arr.shape[2] if arr.ndim == 3 else 1, resolution, resolution)
    for i in range(resolution):
        a, b = (i * size) // resolution, -((-(i + 1) * size) // resolution)  # pooling bounds
        strip = torch.from_numpy(arr[ys[a:b, None], xs[None, :]].astype(np.float32) / top)
        strip = strip.permute(2, 0, 1)[None] if strip.ndim == 3 else strip[None, None]
        # Written into one array made first: no small block left between the strips' (that
        # would keep the heap from reusing their memory).
        out[:, :, i : i + 1] = F.adaptive_avg_pool2d(strip, (1, resolution))
        del strip
    return out


def region_to_model(
    photo: np.ndarray, box: Box, resolution: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """What the generator is fitted to for a region of the photo: [1, 3, R, R] in [-1, 1];
    = to_model(crop(photo[..., :3], box)) without the crop at full size (alpha ignored)."""
    return (crop_scaled(photo[..., :3], box, resolution) * 2 - 1).to(device)


def to_model(rgb: np.ndarray, resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[S, S, 3] uint8/16 -> [1, 3, R, R] float in [-1, 1] (area-averaged when shrinking)."""
    t = torch.from_numpy(rgb.astype(np.float32) / DTYPE_MAX[rgb.dtype]).permute(2, 0, 1)[None]
    t = resize(t, resolution)
    return (t * 2 - 1).to(device)


def mask_to_model(
    mask: np.ndarray, resolution: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[S, S] uint8 -> [1, 1, R, R] in [0, 1]."""
    t = torch.from_numpy(mask.astype(np.float32) / 255.0)[None, None]
    return resize(t, resolution).clamp(0, 1).to(device)


def resize(t: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size]: area when shrinking, bicubic when enlarging."""
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if t.shape[-1] > size:
        return F.interpolate(t, size=(size, size), mode="area")
    return F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)


def mask_window(mask: np.ndarray, margin: int = 0) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): bounding box of the mask's non-zero pixels grown by ``margin``,
    clipped to the image; None when the mask is empty."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(rows) == 0:
        return None
    h, w = mask.shape[:2]
    return (
        max(int(rows[0]) - margin, 0),
        min(int(rows[-1]) + 1 + margin, h),
        max(int(cols[0]) - margin, 0),
        min(int(cols[-1]) + 1 + margin, w),
    )
