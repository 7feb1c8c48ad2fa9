"""Does a remove leave alone what the photo does not show (≥ 35 dB and detail ≥ 0.9 inside
the selection)?

The target: removing a concept a photo does not contain leaves the selection as it was
(≥ 35 dB inside, detail ratio ≥ 0.9). Two removes are compared for the default model's
concepts learned from examples: ``method`` (the published one: the units set to 0 in every
selected cell, ``ganpaint edit --remove-all``) and ``presence`` (what the CLI, server and
plug-in do: the units switched off only where the concept's presence probe finds it,
core/edit.py ``remove_where_present``).

- ``samples``: the GAN samples the concepts were learned from (positives = those showing the
  concept, scripts/make_starter_concepts.py). Mean |ΔG| in the concept's region on
  positives (a real removal) and negatives (nothing to remove), the share of negatives
  that stay ≥ 35 dB there, and the share of the method's change kept on positives. The
  shipped probe was learned on these very samples, so ``presence held-out`` also learns
  it on one half and measures on the other (2 folds), calibrated on the same real photos
  as the shipped one (make_starter_concepts.BACKGROUND_PHOTOS).
- ``photos``: the first fast (``--quality``) edit of each photo, through
  ``pipeline.edit_photo`` as the CLI runs it, with core/metrics.py's numbers. Absent
  concepts count towards the target. None of these photos calibrates the probes.
- ``places``: the presence remove only, the same way, at random selections of the
  wallpapers (none of them shows a face): how the target holds away from the one selection
  per photo that ``photos`` measures.

    python benchmarks/bench_remove.py samples
    python benchmarks/bench_remove.py photos [--photos Path Kite ...] [--out DIR]
    python benchmarks/bench_remove.py places [--per-photo 4] [--seed 123]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

from bench_composite import PLACES, ellipse, photo_and_selection  # noqa: E402
from make_starter_concepts import EXAMPLE_SEED, EXAMPLES, LEARNED, background_acts  # noqa: E402

from ganpaint.core.adapt import AdaptConfig  # noqa: E402
from ganpaint.core.concepts.background import calibrate  # noqa: E402
from ganpaint.core.concepts.library import ConceptLibrary  # noqa: E402
from ganpaint.core.concepts.rank import presence_probe  # noqa: E402
from ganpaint.core.concepts.regions import box_mask  # noqa: E402
from ganpaint.core.edit import Presence, apply_edit, remove_where_present  # noqa: E402
from ganpaint.core.encoder import model_encoder  # noqa: E402
from ganpaint.core.fast import FastConfig  # noqa: E402
from ganpaint.core.generators import load_model  # noqa: E402
from ganpaint.core.imageio import write_image  # noqa: E402
from ganpaint.core.invert import default_config  # noqa: E402
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo  # noqa: E402

CONCEPTS = ("dark hair", "blond hair", "open mouth")  # learned from examples, with a remove
# (photo, concept) where the concept is there: Obama's dark hair, the astronaut's smiling,
# open mouth (skimage's astronaut.png, 512 px).
PRESENT = {("obama", "dark hair"), ("astronaut", "open mouth")}
SELECTIONS = {**PLACES, "astronaut": (0.305, 0.44, 0.02, 0.05)}
WIDE = ("Path", "Kite", "BytheWater", "FallenLeaf", "EveningGlow")  # 2560×1600
PHOTOS = (*WIDE, "biden", "obama", "astronaut")


def psnr_db(d: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """d: [B, 3, R, R] a change in [-1, 1] units; region [1, 1, R, R] -> [B] dB over it."""
    mse = ((d / 2) ** 2).mean(1, keepdim=True)
    mse = (mse * region).sum((1, 2, 3)) / region.sum()
    return -10 * torch.log10(mse.clamp_min(1e-12))


@torch.no_grad()
def samples(args) -> list[dict]:
    gen = load_model("digiface-dcgan64", "cpu")
    lib = ConceptLibrary(gen.model_id, generator=gen)
    k = gen.edit_index
    z = gen.sample_latent(EXAMPLES, torch.Generator().manual_seed(EXAMPLE_SEED))
    acts = gen.run(z, 0, k + 1)
    base = gen.run(acts, k + 1, None)
    background = background_acts(gen)
    rows = []
    for name in CONCEPTS:
        c = lib.get(name)
        units = c.top("high")[0]
        pos = torch.zeros(EXAMPLES, dtype=torch.bool)
        pos[list(LEARNED[name].positives)] = True
        region = torch.from_numpy(box_mask(LEARNED[name].region, gen.resolution))[None, None]
        method = apply_edit(acts, region, units, torch.zeros(len(units)))
        held_out = acts.clone()
        for fold in (0, 1):  # probe from one half, applied to the other
            train = torch.arange(EXAMPLES) % 2 == fold
            d, t = presence_probe(acts[train], region, pos[train], c.presence.quantile)
            probe = Presence(tuple(d.tolist()), t, c.presence.quantile)
            if c.presence.background_quantile is not None:
                probe = calibrate(probe, background, c.presence.background_quantile)
            held_out[~train] = remove_where_present(acts[~train], region, units, probe)[0]
        edits = {
            "method": method,
            "presence": remove_where_present(acts, region, units, c.presence)[0],
            "presence held-out": held_out,
        }
        ref = None
        for rule, r_e in edits.items():
            delta = gen.run(r_e, k + 1, None) - base
            change = (delta.abs().mean(1, keepdim=True) * region).sum((1, 2, 3)) / region.sum()
            db = psnr_db(delta, region)
            row = dict(
                concept=name,
                rule=rule,
                positives=round(float(change[pos].mean()), 4),
                negatives=round(float(change[~pos].mean()), 4),
                negatives_35dB=round(float((db[~pos] >= 35).float().mean()), 3),
            )
            ref = row["positives"] if ref is None else ref
            row["kept"] = round(row["positives"] / ref, 3)
            rows.append(row)
            print(
                f"{name:11s} {rule:18s} positives {row['positives']:.3f} (kept "
                f"{row['kept']:.2f})  negatives {row['negatives']:.3f}  negatives ≥ 35 dB "
                f"{row['negatives_35dB']:.2f}",
                flush=True,
            )
    return rows


def edit_config(gen, args) -> PipelineConfig:
    """The CLI's first edit at ``--quality`` (fast by default)."""
    return PipelineConfig(
        invert=default_config(model_encoder(gen)),
        adapt=AdaptConfig(steps=args.steps),
        quality=args.quality,
        fast=FastConfig(),
    )


def measured(m: dict) -> dict:
    """psnr_inside, detail_ratio (rounded; None: nothing to measure) and present_fraction."""
    psnr, detail = m["psnr_inside"], m["detail_ratio"]
    return dict(
        psnr_inside=None if psnr is None else round(psnr, 2),
        detail_ratio=None if detail is None else round(detail, 3),
        present_fraction=m.get("present_fraction"),
    )


def meets(m: dict) -> bool:
    """≥ 35 dB and detail ratio ≥ 0.9 inside the selection (None: nothing to measure)."""
    psnr, detail = m["psnr_inside"], m["detail_ratio"]
    return (psnr is None or psnr >= 35) and (detail is None or detail >= 0.9)


def places(args) -> list[dict]:
    """The presence remove at ``--per-photo`` random elliptical selections of each photo
    (seeded; radii 3–16 % of the height, aspect 0.6–2), none of which the probes saw."""
    gen = load_model("digiface-dcgan64", "cpu")
    lib = ConceptLibrary(gen.model_id, generator=gen)
    cfg = edit_config(gen, args)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in args.photos:
        photo = photo_and_selection(name, {})[0]
        h, w = photo.shape[:2]
        for _ in range(args.per_photo):
            ry = float(rng.uniform(0.03, 0.16))
            rx = ry * float(rng.uniform(0.6, 2.0)) * h / w
            cy = float(rng.uniform(ry + 0.02, 1 - ry - 0.02))
            cx = float(rng.uniform(rx + 0.02, 1 - rx - 0.02))
            mask = ellipse(h, w, cy * h, cx * w, ry * h, rx * w)
            for concept in CONCEPTS:
                c = lib.get(concept)
                spec = EditSpec(c.top("high")[0], "remove", None, c.layer, c.presence)
                m = edit_photo(gen, photo, mask, spec, cfg, cache={}).metrics
                row = dict(
                    photo=name,
                    place=[round(v, 3) for v in (cy, cx, ry, rx)],
                    concept=concept,
                    **measured(m),
                    meets=meets(m),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"presence: target met on {sum(r['meets'] for r in rows)} of {len(rows)}", flush=True)
    return rows


def photos(args) -> list[dict]:
    gen = load_model("digiface-dcgan64", "cpu")
    lib = ConceptLibrary(gen.model_id, generator=gen)
    cfg = edit_config(gen, args)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.photos:
        photo, mask = photo_and_selection(name, SELECTIONS)
        w = photo.shape[1]
        for concept in CONCEPTS:
            c = lib.get(concept)
            units = c.top("high")[0]
            for rule, presence in (("method", None), ("presence", c.presence)):
                spec = EditSpec(units, "remove", None, c.layer, presence)
                res = edit_photo(gen, photo, mask, spec, cfg, cache={})  # a first edit
                m = res.metrics
                present = (name, concept) in PRESENT
                row = dict(
                    photo=name,
                    width=w,
                    concept=concept,
                    present=present,
                    rule=rule,
                    **measured(m),
                    meets=not present and meets(m),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if out_dir:
                    ys, xs = np.nonzero(mask)
                    y, x = max(int(ys.mean()) - 256, 0), max(int(xs.mean()) - 256, 0)
                    a, b = (
                        photo[y : y + 512, x : x + 512, :3],
                        res.image[y : y + 512, x : x + 512, :3],
                    )
                    gap = np.full((a.shape[0], 4, 3), 255, a.dtype)
                    slug = f"{name}-{concept.replace(' ', '_')}-{rule}"
                    write_image(out_dir / f"{slug}.png", np.concatenate([a, gap, b], axis=1))
    for rule in ("method", "presence"):
        absent = [r for r in rows if r["rule"] == rule and not r["present"]]
        wide = [r for r in absent if r["width"] >= 2000]
        print(
            f"{rule}: target met on {sum(r['meets'] for r in wide)} of {len(wide)} absent removes "
            f"on photos ≥ 2000 px, {sum(r['meets'] for r in absent)} of {len(absent)} on all",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_remove", description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["samples", "photos", "places"])
    p.add_argument(
        "--photos", nargs="+", help=f"default {' '.join(PHOTOS)} (places: {' '.join(WIDE)})"
    )
    p.add_argument("--per-photo", type=int, default=4, help="places: selections per photo")
    p.add_argument("--seed", type=int, default=123, help="places: where the selections lie")
    p.add_argument("--steps", type=int, default=300, help="G′ steps (the CLI's faithful: 1000)")
    p.add_argument("--quality", default="fast", choices=["fast", "faithful"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.photos = args.photos or list(WIDE if args.part == "places" else PHOTOS)
    rows = {"samples": samples, "photos": photos, "places": places}[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
