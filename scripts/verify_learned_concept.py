"""Learn a concept from a selection on a face, then add and remove it elsewhere.

    python scripts/verify_learned_concept.py [--photo FACE.png] [--steps 300] [-o OUT_DIR]

On the default model: learn "hair" from a selection of the hair (pipeline.prepare +
learn.learn_concept), then run pipeline.edit_photo with op add and op remove of the learned
concept (strength high) on other regions. Prints, per edit, the mean absolute change in
0..255 units inside and outside the edited selection (outside must be exactly 0), and how
add and remove differ inside; writes the pictures and a side-by-side sheet to OUT_DIR.

Without --photo (or when the file is missing) the face is a generator sample upscaled to
256 px. Region boxes are fractions of the photo's size, chosen for /tmp/face_crop.png (a
140×140 portrait, hair across the top).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganpaint.core.adapt import AdaptConfig
from ganpaint.core.concepts.learn import learn_concept
from ganpaint.core.generators import DEFAULT_MODEL, load_model
from ganpaint.core.imageio import read_image
from ganpaint.core.invert import InvertConfig
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo

# (y0, x0, y1, x1) as fractions of height / width
HAIR = (0.04, 0.30, 0.30, 0.85)  # the example: hair on top of the head
REGIONS = {
    "side hair": (0.25, 0.08, 0.60, 0.30),  # hair beside the face (remove should thin it)
    "cheek": (0.68, 0.28, 0.86, 0.46),  # skin (add should draw hair-like texture)
}


def box_mask(shape: tuple[int, int], frac: tuple[float, float, float, float]) -> np.ndarray:
    h, w = shape
    y0, x0, y1, x1 = frac
    m = np.zeros((h, w), np.uint8)
    m[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = 255
    return m


def sample_face(gen, size: int = 256) -> np.ndarray:
    with torch.no_grad():
        img = gen(gen.sample_latent(1, torch.Generator().manual_seed(3)))[0]
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))


def change(photo: np.ndarray, out: np.ndarray, mask: np.ndarray) -> tuple[float, float, int]:
    """(mean |Δ| inside, mean |Δ| outside, pixels changed outside), 0..255 units."""
    d = np.abs(out.astype(np.float64) - photo.astype(np.float64)).mean(axis=2)
    inside, outside = mask > 0, mask == 0
    return float(d[inside].mean()), float(d[outside].mean()), int((d[outside] > 0).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", type=Path, default=Path("/tmp/face_crop.png"))
    p.add_argument("--steps", type=int, default=300, help="G′ steps per edit (default 300)")
    p.add_argument("--invert-steps", type=int, default=400)
    p.add_argument("--strength", default="high")
    p.add_argument("-o", "--out", type=Path, default=Path("verify-concepts"))
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gen = load_model(DEFAULT_MODEL, "cpu")
    photo = read_image(args.photo)[..., :3] if args.photo.is_file() else sample_face(gen)
    z_steps = round(args.invert_steps * 3 / 8)
    cfg = PipelineConfig(
        invert=InvertConfig(z_steps=z_steps, r_steps=args.invert_steps - z_steps),
        adapt=AdaptConfig(steps=args.steps),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    hw = photo.shape[:2]
    t0 = time.perf_counter()
    hair = learn_concept(gen, photo, box_mask(hw, HAIR), "hair", cfg, cache=cache)
    report: dict = {
        "photo": str(args.photo) if args.photo.is_file() else "generator sample, 256 px",
        "concept": {
            "units": hair.units,
            "scores": [round(s, 3) for s in hair.scores or []],
            "values": [round(v, 3) for v in hair.values or []],
            "description": hair.description,
        },
        "learn_seconds": round(time.perf_counter() - t0, 1),
        "edits": {},
    }
    units, values = hair.top(args.strength)
    tiles = [photo]
    for region, frac in REGIONS.items():
        mask = box_mask(hw, frac)
        outs = {}
        for op in ("add", "remove"):
            t = time.perf_counter()
            res = edit_photo(gen, photo, mask, EditSpec(units, op, values), cfg, cache=cache)
            outs[op] = res.image
            inside, outside, n_out = change(photo, res.image, mask)
            report["edits"][f"{op} @ {region}"] = {
                "mean_abs_change_inside": round(inside, 2),
                "mean_abs_change_outside": round(outside, 4),
                "pixels_changed_outside": n_out,
                "psnr_keep": round(res.psnr_keep, 2),
                "psnr_inversion": round(res.psnr_inversion, 2),
                "seconds": round(time.perf_counter() - t, 1),
            }
            Image.fromarray(res.image).save(args.out / f"{op}-{region.replace(' ', '_')}.png")
            tiles.append(res.image)
        sel = mask > 0
        a, r = outs["add"].astype(np.float64), outs["remove"].astype(np.float64)
        report["edits"][f"add vs remove @ {region}"] = {
            "mean_abs_difference_inside": round(float(np.abs(a - r).mean(axis=2)[sel].mean()), 2),
            "mean_luma_change_add": round(float((a - photo).mean(axis=2)[sel].mean()), 2),
            "mean_luma_change_remove": round(float((r - photo).mean(axis=2)[sel].mean()), 2),
        }
    hsel = Image.fromarray(box_mask(hw, HAIR)).convert("RGB")
    sheet = Image.new("RGB", (hw[1] * (len(tiles) + 1), hw[0]), "white")
    sheet.paste(Image.blend(Image.fromarray(photo), hsel, 0.35), (0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(Image.fromarray(tile), ((i + 1) * hw[1], 0))
    sheet.save(args.out / "sheet.png")
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
