"""Hair recolours on real portraits at 100 %: does the result keep the photo's strands, move
the colour the way the generator does, without blotches or seams?

Each case is a head from a real portrait (benchmarks/photos.py; never committed), enlarged
to ≥ 1500 px wide as a photographer's crop would be, with a selection of the hair (the
head's ellipse less the face's); each edit is the CLI's (default model, the concept's
default brush, --quality as given). Portraits marked ``held_out`` were never looked at
while the composite's settings were chosen. Per edit, inside the selection eroded by 12 px
(core/metrics.py):

- ``corr``: correlation of the result's fine structure (LoG, σ = 1 px) with the photo's
  (target ≥ 0.7; a smear gives ≈ 0.3, synthetic grain does not raise it);
- ``dLab`` / ``gen``: the mean CIELab change of the result and of the generator's own
  change (x + E − B against x at 64 px, where the selection is full); ``colour ok``: every
  component the generator moves by ≥ 2 moves the same way by at least half;
- ``spread``: chroma spread (mean distance from the mean a*, b*) of the photo → the result
  (target: no more than the photo's + 2);
- ``seam``: colour ΔE and texture log2-ratio steps across the selection's edge and across the
  boundary of replaced content (metrics.seam_steps; "–" where nothing is replaced; at the
  latter, only what exceeds the step of G′'s enlarged rendering there: new content's own
  edges are no seam);
- ``replaced``: the share of the selection drawn anew; ``est.``: the share estimated before
  the fit, with G itself (what the plug-in asks about when it is over 0.5).

    python benchmarks/bench_recolour.py [--quality fast|faithful] [--feather PX]
        [--selection ellipse|polygon|hair] [--concepts C ...] [--out DIR [--format jpg]] [CASE ...]

``--out`` writes, per edit, a 100 % crop of photo | result to look at (``--format jpg``: the
gallery's, docs/concepts/img/at100-*).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from photos import photo
from PIL import Image, ImageDraw, ImageFilter

from ganpaint.core import pipeline
from ganpaint.core.composite import upsample_window
from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.encoder import model_encoder
from ganpaint.core.generators import load_model
from ganpaint.core.invert import default_config
from ganpaint.core.metrics import chroma_spread, cielab, in_frame, seam_steps
from ganpaint.core.metrics import structure_correlation as corr_of
from ganpaint.core.photo import crop_scaled

CONCEPTS = ("dark hair", "blond hair", "grey hair")


@dataclass(frozen=True)
class Case:
    photo: str
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the head in the photo
    scale: float  # enlargement of the crop
    head: tuple[float, float, float, float]  # ellipse (cx, cy, rx, ry) around the head, crop px
    face: tuple[float, float, float, float]  # ellipse of the face: the hair is head − face
    held_out: bool
    # The hair as a user traces it with the free-select tool (crop px): its outline, then the
    # hairline back; drawn by looking at the photo, not at any result.
    hair: tuple[tuple[float, float], ...] = ()


CASES = {
    "obama": Case(
        "obama",
        (300, 0, 680, 380),
        4.0,
        (190, 150, 138, 124),
        (190, 222, 128, 128),
        False,
        hair=(
            (55, 200),
            (58, 140),
            (70, 100),
            (95, 60),
            (140, 38),
            (190, 30),
            (240, 38),
            (280, 60),
            (305, 100),
            (320, 150),
            (322, 200),
            (305, 200),
            (300, 150),
            (285, 110),
            (260, 85),
            (220, 72),
            (180, 70),
            (140, 75),
            (110, 95),
            (90, 130),
            (78, 170),
            (72, 200),
        ),
    ),
    "astronaut": Case(
        "astronaut",
        (130, 0, 370, 240),
        6.5,
        (118, 115, 103, 100),
        (128, 175, 62, 100),
        False,
        hair=(
            (30, 120),
            (25, 80),
            (33, 55),
            (55, 30),
            (90, 17),
            (120, 15),
            (150, 25),
            (165, 50),
            (172, 80),
            (168, 115),
            (150, 130),
            (140, 125),
            (143, 95),
            (130, 85),
            (100, 88),
            (75, 85),
            (55, 92),
            (50, 115),
            (45, 125),
        ),
    ),
    "biden": Case(
        "biden",
        (280, 0, 760, 480),
        3.3,
        (290, 300, 200, 215),
        (300, 370, 175, 215),
        True,
        hair=(
            (110, 300),
            (115, 230),
            (125, 175),
            (145, 140),
            (180, 115),
            (230, 98),
            (290, 92),
            (350, 100),
            (400, 125),
            (440, 160),
            (465, 210),
            (475, 270),
            (470, 330),
            (430, 300),
            (425, 230),
            (405, 180),
            (370, 150),
            (300, 138),
            (240, 140),
            (190, 155),
            (160, 185),
            (145, 230),
            (140, 300),
        ),
    ),
    "obama2": Case(
        "obama2",
        (150, 100, 550, 500),
        4.0,
        (225, 220, 150, 160),
        (215, 300, 150, 185),
        True,
        hair=(
            (58, 240),
            (62, 180),
            (80, 130),
            (110, 95),
            (160, 72),
            (210, 62),
            (260, 68),
            (310, 90),
            (350, 125),
            (372, 170),
            (378, 230),
            (372, 290),
            (325, 290),
            (310, 225),
            (300, 165),
            (275, 145),
            (200, 130),
            (125, 125),
            (100, 140),
            (85, 180),
            (75, 240),
        ),
    ),
    "obama3": Case(
        "obama3",
        (540, 160, 1000, 620),
        3.4,
        (230, 235, 168, 178),
        (230, 305, 150, 190),
        True,
        hair=(
            (75, 255),
            (78, 200),
            (90, 160),
            (110, 125),
            (150, 90),
            (200, 66),
            (240, 60),
            (285, 66),
            (325, 90),
            (355, 125),
            (372, 165),
            (378, 210),
            (376, 250),
            (358, 250),
            (352, 180),
            (338, 135),
            (310, 105),
            (270, 93),
            (230, 90),
            (190, 93),
            (150, 110),
            (120, 140),
            (102, 180),
            (97, 255),
        ),
    ),
}


def ellipse(
    h: int, w: int, cx: float, cy: float, rx: float, ry: float, feather: float = 0
) -> np.ndarray:
    """[h, w] uint8 elliptical selection; ``feather`` px: fading to 0 over that many px
    outside the ellipse (as GIMP's Select › Feather does, roughly; negative: inside it)."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    if feather == 0:
        return ((d <= 1) * 255).astype(np.uint8)
    edge = 1 if feather > 0 else 1 + feather / min(rx, ry)
    out = np.clip(1 - (d - edge) * min(rx, ry) / abs(feather), 0, 1)
    return (out * 255).round().astype(np.uint8)


def crescent_polygon(case: Case, vertices: int = 12) -> list[tuple[float, float]]:
    """The hair crescent (head ellipse less face ellipse) as a polygon with ``vertices``
    corners per arc, crop px: what a user draws with the free-select tool, corners and all."""

    def on(e, t):
        cx, cy, rx, ry = e
        return cx + rx * np.cos(t), cy + ry * np.sin(t)

    def inside(e, x, y):
        cx, cy, rx, ry = e
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1

    t = np.linspace(-np.pi, np.pi, 3601)
    hx, hy = on(case.head, t)
    outer = ~inside(case.face, hx, hy)  # the head's arc above the face
    fx, fy = on(case.face, t)
    inner = inside(case.head, fx, fy)  # the face's arc inside the head
    ta, tb = t[outer], t[inner]
    # Both arcs run round the top (t = -π/2); unwrap so each is one interval.
    ta = np.where(ta > np.pi / 2, ta - 2 * np.pi, ta)
    tb = np.where(tb > np.pi / 2, tb - 2 * np.pi, tb)
    arc_a = np.linspace(ta.min(), ta.max(), vertices)
    arc_b = np.linspace(tb.max(), tb.min(), vertices)
    return [on(case.head, v) for v in arc_a] + [on(case.face, v) for v in arc_b]


def head(case: Case, feather: float = 0, shape: str = "ellipse") -> tuple[np.ndarray, np.ndarray]:
    """The enlarged head [H, W, 3] uint8 and its hair selection [H, W] uint8: the head's
    ellipse less the face's (a crescent over the hair; feathered on both edges); or as a
    polygon, feathered by a Gaussian blur (σ = feather / 2, as GIMP's Select › Feather
    roughly does): ``shape="polygon"`` that crescent with corners, ``"hair"`` the hair as
    traced (``Case.hair``)."""
    im = Image.open(photo(case.photo)).convert("RGB").crop(case.crop)
    im = im.resize((round(im.width * case.scale), round(im.height * case.scale)), Image.LANCZOS)
    rgb = np.asarray(im).copy()
    if shape in ("polygon", "hair"):
        sel = Image.new("L", im.size, 0)
        corners = case.hair if shape == "hair" else crescent_polygon(case)
        ImageDraw.Draw(sel).polygon([(x * case.scale, y * case.scale) for x, y in corners], 255)
        if feather > 0:
            sel = sel.filter(ImageFilter.GaussianBlur(feather / 2))
        return rgb, np.asarray(sel).copy()
    head_ = ellipse(*rgb.shape[:2], *(v * case.scale for v in case.head), feather)
    face = ellipse(*rgb.shape[:2], *(v * case.scale for v in case.face), -feather)
    return rgb, np.minimum(head_, 255 - face)


def erode(sel: np.ndarray, r: int) -> np.ndarray:
    t = torch.from_numpy(sel.astype(np.float32))[None, None]
    return (-torch.nn.functional.max_pool2d(-t, 2 * r + 1, 1, r))[0, 0].numpy() > 0.5


def generator_shift(layers: pipeline.Layers, mask: np.ndarray, box) -> np.ndarray:
    """Mean CIELab change the generator makes where the selection is full, at its resolution."""
    res = layers.x.shape[-1]
    full = crop_scaled(mask, box, res)[0, 0].numpy() > 0.99
    x = ((layers.x[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    delta = ((layers.edited - layers.unedited)[0] / 2).permute(1, 2, 0).numpy()
    to8 = lambda a: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)  # noqa: E731
    return cielab(to8(x + delta))[full].mean(0) - cielab(to8(x))[full].mean(0)


def run_edit(gen, rgb, mask, concept, quality):
    """edit_photo as the CLI runs it, keeping the composite's inputs (G′'s renderings)."""
    cfg = pipeline.PipelineConfig(invert=default_config(model_encoder(gen)), quality=quality)
    c = ConceptLibrary(gen.model_id, generator=gen).get(concept)
    units, values = c.top(None)
    spec = pipeline.EditSpec(list(units), "add", list(values), c.layer)
    seen = {}
    composite = pipeline.composite

    def keep_inputs(photo_, mask_, box, layers, cfg_=None, replace=True):
        seen.update(box=box, layers=layers)
        out = composite(photo_, mask_, box, layers, cfg_, replace)
        seen["replaced"], seen["window"] = out.replaced, out.window
        return out

    pipeline.composite = keep_inputs
    cache: dict = {}
    try:
        t0 = time.perf_counter()
        # The estimate the plug-in's question is based on (asked at any share), then the
        # edit on the same inversion.
        ask = dataclasses.replace(cfg, confirm_replaced=-1.0)
        try:
            pipeline.edit_photo(gen, rgb, mask, spec, ask, cache=cache)
            seen["estimate"] = float("nan")  # a crop too small to ask about
        except pipeline.WouldReplace as e:
            seen["estimate"] = e.share
        res = pipeline.edit_photo(gen, rgb, mask, spec, cfg, cache=cache)
        seconds = time.perf_counter() - t0
    finally:
        pipeline.composite = composite
    return res, seen, seconds


def rendering(edited, box, shape) -> np.ndarray:
    """G′'s rendering [1, 3, R, R] enlarged over its crop box, in the photo's frame [H, W, 3]
    uint8 (the crop's border repeated past it)."""
    rows, cols = (-box.y0, shape[0] - box.y0), (-box.x0, shape[1] - box.x0)
    up = upsample_window((edited.detach().float().cpu() + 1) / 2, box.size, rows, cols)
    return (up.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def measure(rgb, mask, res, seen) -> dict:
    out = res.image
    region = erode(mask >= 128, 12)
    d_lab = cielab(out[region]).mean(0) - cielab(rgb[region]).mean(0)
    gen_lab = generator_shift(seen["layers"], mask, seen["box"])
    moved = np.abs(gen_lab) >= 2
    ok = bool(
        np.all(
            (np.sign(d_lab) == np.sign(gen_lab)) & (np.abs(d_lab) >= np.abs(gen_lab) / 2) | ~moved
        )
    )
    replaced = in_frame(seen["replaced"], seen["window"], mask.shape)
    seam_sel = seam_steps(rgb, out, mask > 0)
    rep = (replaced >= 0.5) & (mask >= 128)
    inside = erode(mask >= 128, 8)  # replaced content's boundary away from the selection's edge
    drawn = rendering(seen["layers"].edited, seen["box"], rgb.shape)
    seam_rep = (
        seam_steps(rgb, out, rep, within=inside, reference=drawn)
        if rep.sum() > 400
        else (float("nan"),) * 2
    )
    return {
        "corr": corr_of(out, rgb, region),
        "dLab": d_lab,
        "gen": gen_lab,
        "colour_ok": ok,
        "spread": (chroma_spread(rgb, region), chroma_spread(out, region)),
        "seam_sel": seam_sel,
        "seam_rep": seam_rep,
        "replaced": float(replaced[mask >= 128].mean()),
        "estimate": seen["estimate"],
    }


def crop_window(mask: np.ndarray) -> tuple[slice, slice]:
    """600×400 px around the top of the selection: where hair meets what is above it."""
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.min() + 0.2 * (ys.max() - ys.min())), int(xs.mean())
    y0, x0 = max(cy - 200, 0), max(cx - 300, 0)
    return slice(y0, y0 + 400), slice(x0, x0 + 600)


def save_crop(mask: np.ndarray, path: Path, *images: np.ndarray) -> None:
    """The images side by side (photo | result | …) at 100 %, around the top of the selection."""
    win = crop_window(mask)
    Image.fromarray(np.concatenate([im[win] for im in images], 1)).save(path, quality=88)


def fmt(v) -> str:
    return "–" if not np.isfinite(v) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--quality", default="fast", choices=("fast", "faithful"))
    ap.add_argument("--concepts", nargs="+", default=list(CONCEPTS), metavar="CONCEPT")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--feather", type=float, default=0, help="px of selection feather")
    ap.add_argument("--selection", default="ellipse", choices=("ellipse", "polygon", "hair"))
    ap.add_argument("--format", default="png", choices=("png", "jpg"), help="of --out's crops")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    gen = load_model("digiface-dcgan64", "cpu")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"quality {args.quality}, {args.selection} selection feathered {args.feather:g} px; "
        "portraits enlarged "
        "to >= 1500 px; inside the hair selection"
    )
    print(
        "case        held  concept     corr  dLab (L*, a*, b*)   gen (L*, a*, b*)    ok  "
        "spread        seam sel (dE, tex)  seam repl   replaced (est.)  s"
    )
    rows = []
    for name in args.cases:
        case = CASES[name]
        rgb, mask = head(case, args.feather, args.selection)
        for concept in args.concepts:
            res, seen, seconds = run_edit(gen, rgb, mask, concept, args.quality)
            m = measure(rgb, mask, res, seen)
            rows.append(m)
            cells = [
                f"{name:<11} {'yes' if case.held_out else 'no ':<5} {concept:<11}",
                f"{m['corr']:.2f} ",
                f"{np.array2string(m['dLab'], precision=1, sign=' '):<19}",
                f"{np.array2string(m['gen'], precision=1, sign=' '):<19}",
                f"{'yes' if m['colour_ok'] else 'NO ':<3}",
                f"{m['spread'][0]:5.1f} -> {m['spread'][1]:5.1f} ",
                f"{fmt(m['seam_sel'][0]):>5} {fmt(m['seam_sel'][1]):>5}       ",
                f"{fmt(m['seam_rep'][0]):>5} {fmt(m['seam_rep'][1]):>5} ",
                f"{m['replaced']:.3f} ({fmt(m['estimate'])})  {seconds:.1f}",
            ]
            print(" ".join(cells), flush=True)
            if args.out:
                stem = f"{name}-{concept.replace(' ', '-')}"
                save_crop(mask, args.out / f"{stem}.{args.format}", rgb, res.image)
    keep = sum(r["corr"] >= 0.7 for r in rows)
    ok = sum(r["colour_ok"] for r in rows)
    calm = sum(r["spread"][1] <= r["spread"][0] + 2 for r in rows)
    print(
        f"strands kept (corr >= 0.7): {keep} of {len(rows)}; colour as the generator's: {ok}; "
        f"no blotches (spread <= photo's + 2): {calm}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
