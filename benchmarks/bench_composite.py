"""Photo-resolution results on real 2560×1600 photos, default model.

For each photo and edit: the edit through core/pipeline.py (the composite of core/composite.py)
against the previous composite (G′'s rendering enlarged and pasted over the selection, kept
here as ``legacy_paste``), measured with core/metrics.py at the photo's resolution, plus the
time of the composite alone on a 2000×2000 crop. Writes before | after crops at 100 % into
--out (never commit the photos themselves).

    python benchmarks/bench_composite.py --out /tmp/composite [--photos Path Kite] [--json f]
        [--inversion default|today]   # the CLI's inversion (default) or the 400-step one
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from photos import photo as photo_path  # noqa: E402

from ganpaint.core.adapt import AdaptConfig, keep_mask, run_gprime  # noqa: E402
from ganpaint.core.blur import gaussian_blur  # noqa: E402
from ganpaint.core.composite import Layers, composite  # noqa: E402
from ganpaint.core.concepts.library import ConceptLibrary  # noqa: E402
from ganpaint.core.encoder import model_encoder  # noqa: E402
from ganpaint.core.fast import FastConfig, base_fit  # noqa: E402
from ganpaint.core.generators import load_model  # noqa: E402
from ganpaint.core.imageio import read_image, write_image  # noqa: E402
from ganpaint.core.invert import InvertConfig, default_config  # noqa: E402
from ganpaint.core.metrics import photo_metrics  # noqa: E402
from ganpaint.core.photo import DTYPE_MAX, Box, resize  # noqa: E402
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo, prepare  # noqa: E402
from ganpaint.server.cli.bench import composite_seconds  # noqa: E402

# Where to put the selection on each photo: (cy, cx, ry, rx) as fractions of H, W.
PLACES = {
    "Path": (0.55, 0.45, 0.16, 0.14),
    "Kite": (0.5, 0.5, 0.16, 0.14),
    "BytheWater": (0.55, 0.5, 0.16, 0.14),
    "FallenLeaf": (0.5, 0.5, 0.16, 0.14),
    "EveningGlow": (0.55, 0.5, 0.16, 0.14),
    # portraits (the face model's own domain, but < 2000 px wide): Biden's closed mouth,
    # Obama's short dark hair
    "biden": (0.21, 0.601, 0.0136, 0.062),
    "obama": (0.0616, 0.4945, 0.0308, 0.121),
}


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return inside.astype(np.uint8) * 255


def photo_and_selection(name: str, places: dict = PLACES) -> tuple[np.ndarray, np.ndarray]:
    """A cached real photo and its elliptical selection (``places``: relative centre and
    radii, y then x; a centred ellipse for photos not listed)."""
    photo = read_image(photo_path(name))
    h, w = photo.shape[:2]
    cy, cx, ry, rx = places.get(name, (0.5, 0.5, 0.16, 0.14))
    return photo, ellipse(h, w, cy * h, cx * w, ry * h, rx * w)


def legacy_paste(photo: np.ndarray, generated: torch.Tensor, mask: np.ndarray, box: Box):
    """The previous step 4: G′'s composite at R enlarged to the crop, blended over every
    selected pixel with weight min(m, blur(m)) (radius 0.02 × crop side)."""
    h, w = photo.shape[:2]
    y0, x0 = max(box.y0, 0), max(box.x0, 0)
    y1, x1 = min(box.y0 + box.size, h), min(box.x0 + box.size, w)
    m = mask[y0:y1, x0:x1].astype(np.float32) / 255
    sigma = max(1.0, 0.02 * box.size) / 2
    wt = np.minimum(m, gaussian_blur(torch.from_numpy(m)[None, None], sigma)[0, 0].numpy())
    big = resize(generated.float(), box.size)[0].permute(1, 2, 0).clamp(-1, 1)
    big = ((big + 1) / 2).numpy()[y0 - box.y0 : y1 - box.y0, x0 - box.x0 : x1 - box.x0]
    top = DTYPE_MAX[photo.dtype]
    src = photo[y0:y1, x0:x1, :3].astype(np.float32) / top
    new = np.round((src * (1 - wt[..., None]) + big * wt[..., None]) * top).astype(photo.dtype)
    out = photo.copy()
    out[y0:y1, x0:x1, :3][wt > 0] = new[wt > 0]
    return out


def null_edit(gen, photo, mask, cfg, cache) -> tuple[np.ndarray, float]:
    """The representation left unchanged (r_e = r) through the same fit and composite as an
    edit: (image, seconds)."""
    t0 = time.perf_counter()
    prep = prepare(gen, photo, mask, cfg, cache=cache)
    gen = gen.bind(prep.session.inversion.z)
    keep = keep_mask(prep.mask, gen.resolution)
    z_h = gen.run(prep.session.inversion.r, gen.edit_index + 1, gen.default_split())
    fit = base_fit(gen, z_h, prep.x, cfg.adapt, cfg.fast, keep=keep)
    with torch.no_grad():
        unedited = run_gprime(gen, z_h, fit.fit.perturbation())
    layers = Layers(prep.x, fit.image, unedited, 1 - keep)
    return composite(photo, mask, prep.box, layers).image, time.perf_counter() - t0


def side_by_side(before: np.ndarray, after: np.ndarray, y: int, x: int, size: int):
    """A size×size crop at (y, x) of before | after, 8-bit, with a 4 px white gap."""
    a = before[y : y + size, x : x + size, :3]
    b = after[y : y + size, x : x + size, :3]
    if a.dtype == np.uint16:
        a, b = (a >> 8).astype(np.uint8), (b >> 8).astype(np.uint8)
    gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([a, gap, b], axis=1)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    gen = load_model("digiface-dcgan64", "cpu")
    lib = ConceptLibrary(gen.model_id, generator=gen)
    cfg = PipelineConfig(
        # What the CLI and the server invert with, or the 16-start, 400-step Adam inversion
        invert=default_config(model_encoder(gen))
        if args.inversion == "default"
        else InvertConfig(),
        adapt=AdaptConfig(steps=args.steps),
        quality=args.quality,
        fast=FastConfig(),
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.photos:
        photo, mask = photo_and_selection(name)
        h, w = photo.shape[:2]
        cache: dict = {}
        image, dt = null_edit(gen, photo, mask, cfg, cache)
        row = {"photo": name, "edit": "null (r_e = r)", "seconds": round(dt, 2)}
        row["after"] = _rounded(photo_metrics(photo, image, mask))
        rows.append(row)
        print(json.dumps(row), flush=True)
        edits = []
        for concept, op in args.edits:
            c = lib.get(concept)
            units, values = c.top(args.strength)
            presence = None if args.remove_all else c.presence  # as the CLI
            spec = EditSpec(list(units), op, list(values), c.layer, presence)
            edits.append((f"{op} {concept}", spec))
        for label, spec in edits:
            t0 = time.perf_counter()
            res = edit_photo(gen, photo, mask, spec, cfg, cache=cache)
            dt = time.perf_counter() - t0
            before = legacy_paste(photo, res.generated, mask, res.box)
            old = photo_metrics(photo, before, mask)
            row = {
                "photo": name,
                "size": f"{w}x{h}",
                "crop": res.box.size,
                "edit": label,
                "seconds": round(dt, 2),
                "psnr_keep": round(res.psnr_keep, 2),
                "psnr_inversion": round(res.psnr_inversion, 2),
                "before": _rounded(old),
                "after": _rounded(res.metrics),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            slug = f"{name}-{label.replace(' ', '_')}"
            ys, xs = np.nonzero(mask)
            edge_y = int(ys.min()) - 64  # the selection's top edge, and its centre
            cy_, cx_ = int(ys.mean()), int(xs.mean())
            for part, (y, x) in {
                "edge": (edge_y, cx_ - 256),
                "centre": (cy_ - 256, cx_ - 256),
            }.items():
                pic = side_by_side(before, res.image, max(y, 0), max(x, 0), 512)
                write_image(out_dir / f"{slug}-{part}.png", pic)
    t = composite_seconds(gen.resolution)
    t_old = composite_seconds(gen.resolution, legacy_paste)
    print(
        f"composite alone, 2000×2000 crop, 1000 px selection: {t:.3f} s (the previous paste "
        f"{t_old:.3f} s, ratio {t / t_old:.1f}; load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return {"rows": rows, "composite_2000_s": t, "legacy_2000_s": t_old, "threads": args.threads}


def _rounded(m: dict) -> dict:
    return {k: round(v, 3) if math.isfinite(v) else str(v) for k, v in m.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_composite", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-composite")
    p.add_argument("--photos", nargs="+", default=["Path", "Kite", "BytheWater"])
    p.add_argument(
        "--edits",
        nargs="+",
        type=lambda s: tuple(s.split(":")[::-1]),
        default=[("blond hair", "remove"), ("dark hair", "add"), ("dark background", "add")],
        metavar="OP:CONCEPT",
        help='e.g. "remove:blond hair" "add:dark hair" (the photos contain neither)',
    )
    p.add_argument("--strength", default="high", choices=["low", "med", "high"])
    p.add_argument("--quality", default="fast", choices=["fast", "faithful"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--inversion",
        default="default",
        choices=["default", "today"],
        help="default: the CLI's and server's (encoder + L-BFGS); today: 16 starts, 400 Adam",
    )
    p.add_argument(
        "--remove-all",
        action="store_true",
        help="removes switch units off in every selected cell (the published method), as "
        "`ganpaint edit --remove-all`; default: only where the concept's presence probe finds it",
    )
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
