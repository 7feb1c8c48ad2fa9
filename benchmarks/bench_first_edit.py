"""The first edit of a photo the server has not seen: wall seconds from request to result
layer, the 16-start inversion against the encoder's (or 4 early-stopped starts'), with and
without a base fit before the edit's own, in one process.

    python benchmarks/bench_first_edit.py --models dcgan --threads 1

Its log is bench_first_edit.log.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from photos import photo
from PIL import Image

from ganpaint.core.edit import unit_quantiles
from ganpaint.core.encoder import model_encoder
from ganpaint.core.fast import base_fit
from ganpaint.core.generators.base import LayeredGenerator
from ganpaint.core.invert import InvertConfig, default_config, uses_bf16
from ganpaint.core.pipeline import EditSpec, PipelineConfig, edit_photo, prepare
from ganpaint.server.cli.bench import TREE, load_generator

# Held-out real photos for the first-edit row: (photo, selection centre y, x, side) at the
# photo's own pixels. The crop the pipeline inverts is the selection with 50 % context on
# each side (pipeline.PipelineConfig.context), so a side of 80 on the astronaut crops her
# face at 160 px. Never used to train or select an encoder.
FIRST_EDIT_CASES = {
    "dcgan": [
        ("astronaut face", "astronaut", 105, 228, 80),
        ("astronaut head", "astronaut", 105, 228, 100),
        ("astronaut face, off-centre", "astronaut", 120, 240, 70),
    ],
    "progan": [("Path wallpaper", "Path", 800, 1280, 512)],
}


def real_photo(name: str) -> np.ndarray:
    """A real photo from photos.py: [H, W, 3] uint8."""
    return np.asarray(Image.open(photo(name)).convert("RGB"))


@dataclass
class FirstEditPath:
    """One way to make a region's first edit: its inversion, and (fast quality) whether the
    session's base fit of the unedited region is made before the edit's own fit, as the
    pipeline did before a first edit became one cold fit."""

    invert: InvertConfig
    base_fit_first: bool = False


def first_edit_paths(gen: LayeredGenerator, encoder) -> dict[str, FirstEditPath]:
    """Today's inversion (16 starts, 400 steps) with base fit + edit fit, the new inversion
    (encoder or cheaper starts, early stopping) the same way, and the new inversion with one
    cold fit (the pipeline's path now; its G in bfloat16 where "auto" precision picks it,
    then also a float32 row): {name: FirstEditPath}."""
    new = "encoder + short" if encoder is not None else "4 starts + early stop"
    paths = {
        "today (16 starts, 400 steps; base + edit fit)": FirstEditPath(InvertConfig(), True),
        f"{new}; base + edit fit": FirstEditPath(default_config(encoder), True),
        f"{new}; one cold fit": FirstEditPath(default_config(encoder)),
    }
    if uses_bf16(gen, next(gen.parameters()).device, "auto"):  # bf16 on its own
        fp32 = default_config(encoder, precision="fp32")
        paths[f"{new}; one cold fit; float32"] = FirstEditPath(fp32)
    if encoder is None:  # what `--invert-steps 60` buys where no encoder starts close
        paths[f"{new} (<= 60); one cold fit"] = FirstEditPath(default_config(None, 60))
    return paths


def bench_first_edit(
    name: str,
    qualities: list[str],
    log: Callable[[str], None],
    server: bool = True,
    paths: dict | None = None,
    gen: LayeredGenerator | None = None,
) -> dict:
    """Wall seconds from request to result layer for a photo the session has not seen,
    today's inversion against the new one, in one process (edit_photo, fresh cache).
    paths: {row name: FirstEditPath} instead of ``first_edit_paths``; the first is the
    reference of the ratios. gen: a generator instead of ``load_generator(name)``."""
    gen, weights = (gen, "given") if gen is not None else load_generator(name)
    encoder = model_encoder(gen)
    paths = paths or first_edit_paths(gen, encoder)
    k = gen.edit_index
    units = TREE if gen.infos[k].channels > max(TREE) else [0, 1, 2, 3]
    on = unit_quantiles(gen, k, 64)  # per model, held by the server: not part of an edit
    log(
        f"first edit of a new photo: {gen.model_id} ({weights}), encoder "
        f"{'shipped' if encoder is not None else 'none'}, threads {torch.get_num_threads()}, "
        f"{'server session, fresh cache' if server else 'one-off'}, inversion precision auto = "
        f"{'bf16' if uses_bf16(gen, next(gen.parameters()).device, 'auto') else 'fp32'}"
    )
    rows = []
    for case, photo_name, cy, cx, side in FIRST_EDIT_CASES[name]:
        photo = real_photo(photo_name)
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2] = 255
        for quality in qualities:
            ref_s = None
            for path, way in paths.items():
                if quality == "faithful" and way.base_fit_first and ref_s is not None:
                    continue  # a faithful fit never starts from a base fit: same as the next
                cfg = PipelineConfig(invert=way.invert, quality=quality)
                spec = EditSpec(units, "add")
                cache = {} if server else None
                t0 = time.perf_counter()
                if server:  # the same work as one edit_photo call, timed in two parts
                    prep = prepare(gen, photo, mask, cfg, cache=cache)
                t_inv = time.perf_counter() - t0
                if server and quality == "fast" and way.base_fit_first:
                    bound = gen.bind(prep.session.inversion.z)
                    with torch.no_grad():
                        z_h = bound.run(prep.session.inversion.r, k + 1, gen.default_split())
                    prep.session.base = base_fit(bound, z_h, prep.x, cfg.adapt, cfg.fast).fit
                res = edit_photo(gen, photo, mask, spec, cfg, cache=cache, on_values=on)
                dt = time.perf_counter() - t0
                ref_s = ref_s or dt
                row = {
                    "case": case,
                    "quality": quality,
                    "path": path,
                    "seconds": dt,
                    "invert_s": t_inv if server else None,
                    "psnr_inversion": res.psnr_inversion,
                    "psnr_keep": res.psnr_keep,
                    "fit_steps": res.steps,
                    "speedup": ref_s / dt,
                }
                rows.append(row)
                split = f"(inversion {t_inv:6.2f} s) " if server else ""
                log(
                    f"  {case:<27} {quality:<8} {path:<46} {dt:7.2f} s {split} inversion "
                    f"{res.psnr_inversion:6.2f} dB  psnr_keep {res.psnr_keep:6.2f} dB  "
                    f"fit {res.steps:4d} steps  {ref_s / dt:5.1f}x  load {os.getloadavg()[0]:.1f}"
                )
    return {"model": gen.model_id, "weights": weights, "first_edit": rows}


def main() -> int:
    p = argparse.ArgumentParser(prog="bench_first_edit", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["dcgan", "progan"], choices=["dcgan", "progan"])
    p.add_argument(
        "--qualities", nargs="+", default=["fast", "faithful"], choices=["fast", "faithful"]
    )
    p.add_argument("--one-off", action="store_true", help="first edit without a session cache")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = [bench_first_edit(m, args.qualities, print, not args.one_off) for m in args.models]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
