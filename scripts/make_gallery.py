"""The gallery of a model's built-in concepts: docs/concepts/<model>.md + before/after crops.

    python scripts/make_gallery.py                       # the default model, faithful edits
    python scripts/make_gallery.py --quality fast --all --ops add,remove -o /tmp/try
                                                         # try every concept and operation

For every built-in concept (``--all``: hidden ones too) and every operation it supports
(``--ops``: these instead), one picture: the top row is real portraits (benchmarks/photos.py;
each cropped to the face, since the default model knows faces that fill its frame) before
and after the full pipeline (invert, edit, fit G′, composite), the bottom row GAN samples
edited directly in G (no inversion): the three where the concept is weakest for "add",
strongest for "remove". The selection is outlined on the "before" tiles.

Numbers, per concept and operation (all at the generator's resolution, |Δ| in 0..255 levels):
- ``in``: mean |Δ| inside the selection, edited against unedited (photo: the composite
  against the photo's crop; sample: G(r_e) against G(r));
- ``in/out``: that divided by the mean |Δ| outside the selection (how local the edit is;
  on photos "outside" includes the ring where G′ is free to blend);
- consistency over the photos: ``cv`` = std/mean of ``in``, and ``hits`` = the fraction of
  photos with ``in`` ≥ 8 levels and ``in/out`` ≥ 2.
A verdict per concept and operation comes from looking at the pictures (VERDICTS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts")]

from make_starter_concepts import EXAMPLE_SEED, EXAMPLES, LEARNED  # noqa: E402
from photos import photo  # noqa: E402

from ganpaint.core.adapt import AdaptConfig  # noqa: E402
from ganpaint.core.concepts.library import ConceptLibrary  # noqa: E402
from ganpaint.core.concepts.regions import ellipse_mask  # noqa: E402
from ganpaint.core.edit import edit_representation, pool_mask  # noqa: E402
from ganpaint.core.generators import DEFAULT_MODEL, load_model  # noqa: E402
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo  # noqa: E402

TILE = 112
HIT_LEVELS, HIT_RATIO = 8.0, 2.0


@dataclass(frozen=True)
class Portrait:
    name: str  # benchmarks/photos.py name
    face: tuple[int, int, int]  # x0, y0, side of the square around the face, in pixels
    credit: str


PORTRAITS = (
    Portrait(
        "astronaut",
        (165, 45, 135),
        "Eileen Collins, NASA (public domain), from scikit-image's `astronaut`",
    ),
    Portrait(
        "grace_hopper",
        (150, 120, 230),
        "Grace Hopper, US Navy (public domain), from matplotlib's sample data",
    ),
    Portrait(
        "obama",
        (340, 90, 290),
        "Barack Obama, official White House portrait (public domain), from the test "
        "images of `face_recognition` 1.3.0",
    ),
    Portrait(
        "biden",
        (340, 110, 420),
        "Joe Biden, White House photo (public domain), from the test images of "
        "`face_recognition` 1.3.0",
    ),
)
# Region of each concept on a face (keys of regions.FACE_REGIONS); learned ones have their own.
REGION_OF = {
    "bright background": "side",
    "dark background": "side",
    "yellow background": "side",
    "highlight": "cheek",
    "group-02": "mouth",
    "group-09": "eyes",
}
# How this run of the gallery was made, when it differs from what a user gets.
NOTE = (
    "This run: G′ fitted 200 steps per edit, not the default 1000 (the gallery was made on "
    "a shared 2-core machine); the edit itself is the same, the seam fits less closely."
)
# What the pictures show, per "concept/op": (works?, words). Written after looking at them;
# "weak" is shown as such in the gallery.
VERDICTS: dict[str, tuple[str, str]] = {
    "dark hair/add": (
        "works",
        "the photo's own strands turn dark; where the selection reaches past the hair "
        "(background, forehead) the model draws hair there: a soft dark cap",
    ),
    "blond hair/add": (
        "weak",
        "the photo's own strands turn golden blond; with the faithful fit (the dialog's "
        "default) on 2 of 5 real heads only, so it is left out of the menu",
    ),
}
# The 100 % crops (sudo .venv/bin/python tests/gimp/make_at100.py: through GIMP, the plug-in
# and the server; grey hair's by benchmarks/bench_recolour.py --out, as it is not in the
# menu): per portrait of that benchmark, whether a photographer would keep each concept's
# layer, after looking at the crop.
AT100_HELD_OUT = {
    "obama": False,
    "astronaut": False,
    "biden": True,
    "obama2": True,
    "obama3": True,
}
AT100_KEEP: dict[str, dict[str, str]] = {
    "dark hair": {
        "obama": "yes: black curls, every strand; along the hairline they stay greyer",
        "astronaut": "yes: dark brown hair, every strand, over the whole selection",
        "biden": "no: a dark grey cap with a red-brown blotch over the white hair",
        "obama2": "yes: black curls, every strand",
        "obama3": "yes: the short hair turns near black, most in its middle, a little less "
        "toward the temples",
    },
    "blond hair": {
        "obama": "maybe: the upper curls turn ash blond, a dark band stays along the hairline",
        "astronaut": "yes: golden blond, every strand",
        "biden": "yes: a pale cream blond on the white hair, the forehead untouched",
        "obama2": "yes: golden curls up to the outline; the roots stay dark in a thin line "
        "along the hairline",
        "obama3": "no: the short hair barely lightens",
    },
    "grey hair": {
        "obama": "no: the grey curls barely change",
        "astronaut": "no: a faint ashy tint",
        "biden": "no: white hair stays white",
        "obama2": "no: greyer, with a light round blotch",
    },
}


def face_crop(p: Portrait) -> np.ndarray:
    x, y, s = p.face
    with Image.open(photo(p.name)) as im:
        return np.asarray(im.convert("RGB").crop((x, y, x + s, y + s)))


def effect(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(mean |Δ| inside, inside ÷ outside): images [1, 3, R, R] in [-1, 1], mask [1, 1, R, R]."""
    d = (after - before).abs().mean(dim=1, keepdim=True) * 127.5
    m = (mask > 0.5).float()
    inside = float((d * m).sum() / m.sum().clamp_min(1))
    outside = float((d * (1 - m)).sum() / (1 - m).sum().clamp_min(1))
    return inside, inside / max(outside, 1e-3)


def to_pil(img: np.ndarray | torch.Tensor) -> Image.Image:
    if isinstance(img, torch.Tensor):
        img = ((img[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(img).resize((TILE, TILE), Image.LANCZOS)


def outlined(tile: Image.Image, mask: np.ndarray) -> Image.Image:
    """The tile with the selection's border drawn in yellow."""
    m = np.asarray(Image.fromarray(mask).resize((TILE, TILE), Image.NEAREST)) > 127
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    arr = np.asarray(tile).copy()
    arr[edge] = (255, 220, 0)
    return Image.fromarray(arr)


def region_of(name: str) -> str:
    return LEARNED[name].region if name in LEARNED else REGION_OF.get(name, "cheek")


@torch.no_grad()
def sample_edits(gen, concept, op: str, units, values, region: str, n: int = 3):
    """Before/after tiles and effects on the n GAN samples weakest (add) / strongest (remove)
    in the concept's region."""
    k = gen.index(concept.layer)
    z = gen.sample_latent(EXAMPLES, torch.Generator().manual_seed(EXAMPLE_SEED))
    acts = gen.run(z, 0, k + 1)
    mask64 = ellipse_mask(region, gen.resolution)
    m = torch.from_numpy(mask64 / 255.0).float()[None, None]
    cells = pool_mask(m, acts.shape[-1])
    level = (acts[:, units] * cells).sum(dim=(1, 2, 3)) / cells.sum()
    order = torch.argsort(level, descending=op == "remove").tolist()[:n]
    vals = torch.tensor(values) if op == "add" else torch.zeros(len(units))
    tiles, effects = [], []
    for i in order:
        r = acts[i : i + 1]
        r_e = edit_representation(r, m, units, op, vals, concept.presence)[0]  # as the pipeline
        before, after = gen.run(r, k + 1), gen.run(r_e, k + 1)
        tiles.append((outlined(to_pil(before), mask64), to_pil(after)))
        effects.append(effect(before, after, m))
    return order, tiles, effects


def photo_edits(gen, concept, op: str, units, values, region: str, cfg, caches, crops):
    tiles, effects = [], []
    spec = EditSpec(units, op, values, presence=concept.presence)
    for p, img in crops:
        mask = ellipse_mask(region, img.shape[0])
        res = edit_photo(gen, img, mask, spec, cfg, cache=caches[p.name])
        m = torch.from_numpy(mask / 255.0).float()[None, None]
        m = torch.nn.functional.interpolate(m, size=res.target.shape[-2:], mode="area")
        tiles.append((outlined(to_pil(img), mask), to_pil(res.image)))
        effects.append(effect(res.target, res.generated, m))
    return tiles, effects


def strip(rows: list[list[tuple[Image.Image, Image.Image]]], labels: list[str]) -> Image.Image:
    pad, gap, label_h = 2, 8, 14
    cols = max(len(r) for r in rows)
    w = cols * (2 * TILE + pad + gap)
    h = len(rows) * (TILE + label_h)
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = r * (TILE + label_h)
        draw.text((2, y + 1), label, fill="black")
        for c, (before, after) in enumerate(row):
            x = c * (2 * TILE + pad + gap)
            sheet.paste(before, (x, y + label_h))
            sheet.paste(after, (x + TILE + pad, y + label_h))
    return sheet


def summarise(effects: list[tuple[float, float]]) -> dict:
    ins = np.array([e[0] for e in effects])
    ratios = np.array([e[1] for e in effects])
    hits = float(np.mean((ins >= HIT_LEVELS) & (ratios >= HIT_RATIO)))
    return {
        "in": round(float(ins.mean()), 1),
        "in_out": round(float(np.median(ratios)), 1),
        "cv": round(float(ins.std() / max(ins.mean(), 1e-6)), 2),
        "hits": round(hits, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "concepts")
    p.add_argument("--all", action="store_true", help="hidden concepts too")
    p.add_argument("--only", help="comma-separated concept names")
    p.add_argument("--ops", help="comma-separated operations to try instead of each concept's")
    p.add_argument("--pairs", help="comma-separated concept/op pairs to try (implies --all)")
    p.add_argument("--strength", default="high")
    p.add_argument("--quality", default="faithful", choices=["faithful", "fast"])
    p.add_argument("--steps", type=int, default=1000, help="G′ steps per edit")
    p.add_argument("--photos", type=int, default=3, help="how many portraits (≤ 4)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--part",
        help="write the results as <model>-<PART>.json and no .md (run parts in parallel "
        "with --only, then --markdown-only merges them)",
    )
    p.add_argument(
        "--markdown-only",
        action="store_true",
        help="rewrite the .md from the saved .json results (after editing VERDICTS)",
    )
    args = p.parse_args(argv)
    if args.markdown_only:
        return rewrite_markdown(args)
    torch.set_num_threads(args.threads)
    gen = load_model(DEFAULT_MODEL, "cpu")
    lib = ConceptLibrary(DEFAULT_MODEL, generator=gen)
    pairs = [tuple(x.split("/")) for x in args.pairs.split(",")] if args.pairs else []
    concepts = lib.builtins() if args.all or pairs else [c for c in lib.builtins() if not c.hidden]
    if args.only or pairs:
        wanted = args.only.split(",") if args.only else [name for name, _ in pairs]
        concepts = [c for c in concepts if c.name in wanted]
    cfg = PipelineConfig(adapt=AdaptConfig(steps=args.steps), quality=args.quality)
    portraits = PORTRAITS[: args.photos]
    crops = [(pt, face_crop(pt)) for pt in portraits]
    caches: dict[str, dict] = {pt.name: {} for pt in portraits}
    img_dir = args.out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for c in concepts:
        ops = args.ops.split(",") if args.ops else c.ops
        if pairs:
            ops = [op for name, op in pairs if name == c.name]
        region = region_of(c.name)
        for op in ops:
            t0 = time.perf_counter()
            units, values = c.top(args.strength)
            order, s_tiles, s_eff = sample_edits(gen, c, op, units, values, region)
            p_tiles, p_eff = photo_edits(gen, c, op, units, values, region, cfg, caches, crops)
            stem = f"{c.name.replace(' ', '-')}-{op}"
            strip(
                [p_tiles, s_tiles],
                [
                    f"{op} {c.name}: real photos (full pipeline)",
                    f"GAN samples {order} (edited in G)",
                ],
            ).save(img_dir / f"{DEFAULT_MODEL}-{stem}.png", optimize=True)
            row = {
                "concept": c.name,
                "op": op,
                "region": region,
                "units": len(units),
                "photos": summarise(p_eff),
                "samples": summarise(s_eff),
                "photo_effects": [[round(a, 1), round(b, 1)] for a, b in p_eff],
                "image": f"img/{DEFAULT_MODEL}-{stem}.png",
            }
            results.append(row)
            print(json.dumps(row), f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    settings = {
        "strength": args.strength,
        "quality": args.quality,
        "steps": args.steps,
        "photos": [pt.name for pt in portraits],
    }
    saved = {"settings": settings, "results": results}
    name = f"{DEFAULT_MODEL}-{args.part}.json" if args.part else f"{DEFAULT_MODEL}.json"
    (args.out / name).write_text(json.dumps(saved, indent=1) + "\n")
    if not (args.ops or args.all or pairs or args.part):
        write_markdown(args.out / f"{DEFAULT_MODEL}.md", concepts, results, portraits, args)
    return 0


def rewrite_markdown(args) -> int:
    """The .md from the saved results; parts (``--part``) are merged into one .json first."""
    path = args.out / f"{DEFAULT_MODEL}.json"
    parts = sorted(args.out.glob(f"{DEFAULT_MODEL}-*.json"))
    if parts:
        loaded = [json.loads(p.read_text()) for p in parts]
        if any(part["settings"] != loaded[0]["settings"] for part in loaded):
            print("the parts were made with different settings", file=sys.stderr)
            return 1
        merged = {"settings": loaded[0]["settings"], "results": []}
        for part in loaded:
            merged["results"] += part["results"]
        path.write_text(json.dumps(merged, indent=1) + "\n")
        for p in parts:
            p.unlink()
    saved = json.loads(path.read_text())
    lib = ConceptLibrary(DEFAULT_MODEL)
    concepts = [c for c in lib.builtins() if not c.hidden]
    shown = {(c.name, op) for c in concepts for op in c.ops}
    results = [r for r in saved["results"] if (r["concept"], r["op"]) in shown]
    missing = shown - {(r["concept"], r["op"]) for r in results}
    if missing:
        print(
            f"no saved results for {sorted(missing)}: run without --markdown-only", file=sys.stderr
        )
        return 1
    for key in ("strength", "quality", "steps"):
        setattr(args, key, saved["settings"][key])
    portraits = [pt for pt in PORTRAITS if pt.name in saved["settings"]["photos"]]
    write_markdown(args.out / f"{DEFAULT_MODEL}.md", concepts, results, portraits, args)
    return 0


def at100_section(menu: set[str]) -> list[str]:
    """The 100 % crops of the hair concepts (shown or hidden) on the portraits of
    benchmarks/bench_recolour.py, with the verdicts of AT100_KEEP."""
    lines = [
        "## At 100 % on portraits enlarged to ≥ 1500 px",
        "",
        "What a photographer judges: the result layer at 100 %. Each picture is photo | "
        "canvas with the result layer, 600×400 px each, cut from a head enlarged to "
        "1520–1600 px wide. Made through GIMP 3.0 with the installed plug-in and the real "
        "server (`sudo .venv/bin/python tests/gimp/make_at100.py`): the selection made in "
        "GIMP as a user makes it (the hair traced with the free-select tool, 19–24 corners "
        "along its outline and hairline, Select › Feather 15 px), then *Add Concept* with "
        "strength high and the dialog's *Fast* switch on (grey hair, not in the menu: "
        "`benchmarks/bench_recolour.py --out`, the head's ellipse less the face's, hard). "
        "The numbers for the same heads and selections (fine-structure correlation, CIELab "
        "shift, chroma spread, seams, share drawn anew): "
        "`python benchmarks/bench_recolour.py`. Portraits marked *held out* were not looked "
        "at while the colour transform was tuned (the fade that follows the photo's edges "
        "was chosen looking at obama2 and obama3). *Keep?* is a verdict from looking at the "
        "crop. "
        "With the faithful fit (the dialog's default; `make_at100.py --quality faithful`) "
        "the edits are milder: dark hair is kept on 3 of 5 (obama3's short hair a maybe), "
        "blond hair on 2 of 5 (obama's barely changes, biden's is a faint cream), so blond "
        "hair stays out of the menu.",
        "",
        "**Two edits stacked** (obama): photo | blond hair on the hair | then dark hair on "
        "the upper half, a second result layer above the first. Both show; hiding the upper "
        "layer gives the middle picture back (the GIMP test `test_result_layers_stack` checks "
        "that bit for bit).",
        "",
        "![two edits stacked](img/at100/stack-obama.jpg)",
        "",
    ]
    for name in AT100_KEEP:
        kept = sum(v.startswith("yes") for v in AT100_KEEP[name].values())
        shown = "" if name in menu else " (left out of the menu)"
        lines += [f"### add {name}: kept on {kept} of {len(AT100_KEEP[name])}{shown}", ""]
        for case, verdict in AT100_KEEP[name].items():
            held = " (held out)" if AT100_HELD_OUT[case] else ""
            stem = f"{case}-{name.replace(' ', '-')}"
            lines += [
                f"**{case}{held}** — keep? {verdict}",
                "",
                f"![add {name} on {case}](img/at100/{stem}.jpg)",
                "",
            ]
    return lines


def write_markdown(path: Path, concepts, results, portraits, args) -> None:
    by_name = {c.name: c for c in concepts}
    lines = [
        f"# Concepts of `{DEFAULT_MODEL}` (the default model)",
        "",
        "Made by `scripts/make_gallery.py` "
        f"(`--strength {args.strength} --quality {args.quality} --steps {args.steps}`); "
        "regenerate it after changing a concept. Every built-in concept that the menu shows, "
        "with each operation it offers (`ops` in the concept record; the plug-in offers only "
        "those). Per picture: top row real portraits through the full pipeline (invert, "
        "edit, fit G′, composite), bottom row GAN samples edited directly in G. The "
        "selection is outlined in yellow on each *before* tile.",
        "",
        NOTE,
        "",
        "Recognised at a glance on real photos: "
        + ", ".join(
            f"*{k.split('/')[1]} {k.split('/')[0]}*"
            for k, v in VERDICTS.items()
            if v[0].startswith("works")
        )
        + ". What is not kept on real photos is left out of the menu (last section).",
        "",
        "The default model draws 64×64 faces that fill the frame, so each photo is first "
        "cropped to the face (that is how to use it in GIMP too: the selection's square "
        "with context should be about the face). Edits happen on its 8×8 layer, so a "
        "selection smaller than an eighth of the face switches a whole cell.",
        "",
        "Numbers (at the generator's resolution, |Δ| in 0..255 levels): **in** = mean |Δ| "
        "inside the selection (photo: composite vs the photo; sample: edited vs unedited), "
        "**in/out** = median ratio of that to the mean |Δ| outside (on photos the outside "
        "includes the ring where G′ blends), **cv** = std/mean of *in* over the photos, "
        f"**hits** = fraction of photos with *in* ≥ {HIT_LEVELS:g} and *in/out* ≥ "
        f"{HIT_RATIO:g}. A big number is not a good edit: the verdict column is what the "
        "pictures show.",
        "",
        "| concept | op | where | verdict | photos in · in/out · cv · hits | samples in · in/out |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        c = by_name[r["concept"]]
        verdict = VERDICTS.get(f"{c.name}/{r['op']}", ("?", "not judged yet"))
        ph, sa = r["photos"], r["samples"]
        lines.append(
            f"| {c.name} | {r['op']} | {c.where} | **{verdict[0]}**: {verdict[1]} | "
            f"{ph['in']} · {ph['in_out']} · {ph['cv']} · {ph['hits']} | "
            f"{sa['in']} · {sa['in_out']} |"
        )
    lines.append("")
    lines += at100_section({c.name for c in concepts})
    for r in results:
        lines += [
            f"### {r['op']} {r['concept']}",
            "",
            f"![{r['op']} {r['concept']}]({r['image']})",
            "",
        ]
    hidden = [c for c in ConceptLibrary(DEFAULT_MODEL).builtins() if c.hidden]
    named = [c for c in hidden if not c.name.startswith("group-")]
    lines += [
        "## Tried and left out of the menu",
        "",
        "Built-in but `hidden` (usable by name, e.g. `--concept glasses`; `ganpaint concept "
        "list --all` shows them), because on real photos they do not do what a name would "
        "say:",
        "",
        *[f"- **{c.name}** ({'/'.join(c.ops)}): {c.where}." for c in named],
        f"- {len(hidden) - len(named)} unnamed groups of `ganpaint concept discover` "
        "(`group-NN`), among them the former *eyes* (draws brow- or frame-like smudges, never "
        "eyes) and *mouth* (add smears dark lips, remove does next to nothing on photos).",
        "",
        "## Photos",
        "",
        *[f"- {pt.credit}." for pt in portraits],
        "",
        "They are fetched by `benchmarks/photos.py` and never committed; the crops above are "
        "small derivatives of public-domain photos.",
        "",
        "## ProGAN churchoutdoor",
        "",
        "The `progan-churchoutdoor` concepts (tree, grass, door, sky, cloud, brick, dome: the "
        "published GAN Dissection rankings) cannot be shown here: its trained weights cannot "
        "be downloaded in the environment where this gallery is made, and random weights "
        "draw nothing a name could describe.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
