"""Pixels on the wire <-> numpy arrays for the core: raw, row-major, interleaved, little-endian.

No encoding: a frame is exactly width × height × channels × bytes-per-sample long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPES = {"u8": np.dtype(np.uint8), "u16": np.dtype("<u2")}


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    channels: int
    dtype: str  # "u8" | "u16"

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * DTYPES[self.dtype].itemsize

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype,
        }

    def describe(self) -> str:
        kind = {1: "mask", 3: "RGB", 4: "RGBA"}.get(self.channels, f"{self.channels}ch")
        return f"{self.width}x{self.height} {kind} {self.dtype}"


def to_array(meta: ImageMeta, data: bytes | memoryview) -> np.ndarray:
    """[H, W, C] (or [H, W] for one channel) in native byte order; a copy, so the caller may
    drop the frame."""
    if len(data) != meta.nbytes:
        raise ValueError(f"expected {meta.nbytes} bytes of pixels, got {len(data)}")
    arr = np.frombuffer(data, dtype=DTYPES[meta.dtype])
    shape = (
        (meta.height, meta.width)
        if meta.channels == 1
        else (meta.height, meta.width, meta.channels)
    )
    return arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True)


def from_array(arr: np.ndarray) -> tuple[ImageMeta, memoryview]:
    """An [H, W, C] or [H, W] uint8/uint16 array -> its wire description and bytes: a view
    of ``arr`` where it is already in wire layout (no second copy of a result in memory)."""
    if arr.dtype == np.uint8:
        dtype = "u8"
    elif arr.dtype == np.uint16:
        dtype = "u16"
    else:
        raise ValueError(f"cannot send {arr.dtype} pixels")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    data = memoryview(np.ascontiguousarray(arr, dtype=DTYPES[dtype])).cast("B")
    return ImageMeta(arr.shape[1], arr.shape[0], channels, dtype), data
