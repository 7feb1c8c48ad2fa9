"""Test photos and masks made in code (importable as `samples` from any test)."""

from __future__ import annotations

import numpy as np


def make_photo(h: int, w: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth photo-like test image with some texture, [h, w, channels]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [0.5 + 0.4 * np.sin(xx / 97 + c) * np.cos(yy / 71 - c) for c in range(3)], axis=2
    )
    base += rng.normal(0, 0.03, base.shape)
    top = 65535 if dtype == np.uint16 else 255
    img = np.clip(base, 0, 1) * top
    if channels == 4:
        alpha = np.clip(xx / max(w - 1, 1), 0, 1)[..., None] * top
        img = np.concatenate([img, alpha], axis=2)
    return np.round(img).astype(dtype)


def make_mask(h: int, w: int, box: tuple[int, int, int, int], soft: int = 0) -> np.ndarray:
    """[h, w] uint8: 255 inside (y0, x0, y1, x1), with an optional soft ramp outside it."""
    m = np.zeros((h, w), np.float32)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = 1
    if soft:
        yy, xx = np.mgrid[0:h, 0:w]
        dy = np.maximum(np.maximum(y0 - yy, yy - (y1 - 1)), 0)
        dx = np.maximum(np.maximum(x0 - xx, xx - (x1 - 1)), 0)
        m = np.maximum(m, np.clip(1 - np.hypot(dy, dx) / soft, 0, 1))
    return np.round(m * 255).astype(np.uint8)
