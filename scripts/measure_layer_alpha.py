"""How far each way of building a result layer is from the edit it holds (plugin/README.md).

    python scripts/measure_layer_alpha.py [--feather 4] [--quality fast]

Runs the demo's edit (``ganpaint demo``: dark hair on a generated portrait) with the demo's
ellipse feathered by a Gaussian of ``--feather`` px, and composites three candidate layers
over the photo. The server's result R is already faded by the selection's value a (only
pixels with mask > 0 change), so:

- opaque where a > 0, colour R: the canvas is R (error 0 by construction; checked);
- alpha a, colour R: the fade applied twice, canvas a·R + (1 − a)·P;
- alpha a, colour (R − (1 − a)·P)/a, rounded to 8 bits and clamped: exact when blended in
  perceptual (sRGB-encoded) values; GIMP 3's Normal mode blends in linear light by default.

Prints the largest and the mean error (0..255 levels) over the selected pixels.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageFilter

from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.generators import load_model
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo
from ganpaint.server.cli.demo import CONCEPT, OP, STRENGTH, demo_mask, demo_photo


def linear(v: np.ndarray) -> np.ndarray:
    v = v / 255
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def encoded(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0, 1)
    return 255 * np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--feather", type=float, default=4.0, help="Gaussian σ of the selection, px")
    ap.add_argument("--quality", default="fast", choices=["fast", "faithful"])
    args = ap.parse_args()
    gen = load_model()
    photo = demo_photo(gen)
    mask = np.asarray(Image.fromarray(demo_mask()).filter(ImageFilter.GaussianBlur(args.feather)))
    units, values = ConceptLibrary(gen.model_id, generator=gen).get(CONCEPT).top(STRENGTH)
    cfg = PipelineConfig(quality=args.quality)
    result = edit_photo(gen, photo, mask, EditSpec(units, OP, values), cfg).image.astype(float)
    p = photo.astype(float)
    a = mask.astype(float)[..., None] / 255
    sel = mask > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        divided = np.where(a > 0, (result - (1 - a) * p) / a, p)
    clamped = int(((divided < -0.5) | (divided > 255.5)).any(axis=2)[sel].sum())
    colour = np.clip(np.round(divided), 0, 255)
    canvases = {
        "opaque where a > 0, colour R": result,
        "alpha a, colour R": np.round(a * result + (1 - a) * p),
        "alpha a, colour divided, perceptual blend": np.round(a * colour + (1 - a) * p),
        "alpha a, colour divided, linear-light blend": np.round(
            encoded(a * linear(colour) + (1 - a) * linear(p))
        ),
    }
    soft = int(((mask > 0) & (mask < 255)).sum())
    print(f"{int(sel.sum())} selected pixels, {soft} partly; {clamped} needed clamping")
    for name, out in canvases.items():
        err = np.abs(out - result).max(axis=2)[sel]
        print(f"{name:<45} max {err.max():5.1f}  mean {err.mean():5.2f} levels")


if __name__ == "__main__":
    main()
