"""Where things are on an aligned face: the default model's faces fill its frame.

The built-in concepts of ``digiface-dcgan64`` were learned in these regions, and its gallery
and ``ganpaint demo`` select them. Boxes are (y0, x0, y1, x1) as fractions of the frame;
eyes sit at ~0.42 of the height, the mouth at ~0.72.
"""

from __future__ import annotations

import numpy as np

FACE_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "hair": (0.0, 0.05, 0.30, 0.95),
    "eyes": (0.30, 0.10, 0.55, 0.90),
    "upper lip": (0.62, 0.25, 0.80, 0.75),
    "mouth": (0.62, 0.25, 0.88, 0.75),
    "cheek": (0.48, 0.12, 0.72, 0.42),
    "side": (0.05, 0.0, 0.65, 0.2),
}


def box_mask(region: str | Box, size: int) -> np.ndarray:
    """[size, size] float32: 1 inside the region's box, 0 elsewhere."""
    y0, x0, y1, x1 = _region(region)
    m = np.zeros((size, size), np.float32)
    m[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = 1
    return m


Box = tuple[float, float, float, float]  # (y0, x0, y1, x1), fractions of the frame


def ellipse_mask(region: str | Box, size: int) -> np.ndarray:
    """[size, size] uint8: 255 inside the ellipse inscribed in the region's box (a name of
    FACE_REGIONS or a box), else 0."""
    y0, x0, y1, x1 = _region(region)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cy, cx = (y0 + y1) / 2 * size, (x0 + x1) / 2 * size
    ry, rx = (y1 - y0) / 2 * size, (x1 - x0) / 2 * size
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) * 255).astype(np.uint8)


def _region(region: str | Box) -> Box:
    if isinstance(region, tuple):
        return region
    if region not in FACE_REGIONS:
        raise KeyError(f"unknown face region {region!r}; known: {', '.join(FACE_REGIONS)}")
    return FACE_REGIONS[region]
