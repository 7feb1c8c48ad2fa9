"""Inversion ablations: each change to the inversion measured on its own.

Held-out real photos (the cases of bench_first_edit.py), cropped as the pipeline
crops them and resized to the generator's resolution; one process, rows in order, so the
ratios against today's path ("today": 16 random starts, 150 z + 250 r steps) are taken
under the same load.

    python benchmarks/bench_invert.py [--model dcgan|progan] [--threads 1] [--rows a,b,...]
        [--encoder FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from bench_first_edit import FIRST_EDIT_CASES, real_photo

from ganpaint.core.encoder import load_encoder, model_encoder
from ganpaint.core.invert import InvertConfig, default_config, invert
from ganpaint.core.photo import crop, selection_box, to_model
from ganpaint.server.cli.bench import load_generator


def targets(name: str, res: int) -> list[tuple[str, torch.Tensor]]:
    out = []
    for case, photo_name, cy, cx, side in FIRST_EDIT_CASES[name]:
        photo = real_photo(photo_name)
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2] = 255
        box = selection_box(mask, 0.5, min_size=res)
        out.append((case, to_model(crop(photo, box), res)))
    return out


def rows(encoder) -> dict[str, InvertConfig]:
    rep = dataclasses.replace
    today = InvertConfig()
    lb = {"optimizer": "lbfgs", "loss": "mse"}
    r = {
        "today": today,
        "early stop only (patience 30)": rep(today, patience=30),
        "4 starts only": rep(today, starts=4),
        "1 start only": rep(today, starts=1),
        "no z phase only (r 400)": rep(today, z_steps=0, r_steps=400),
        "MSE loss only": rep(today, loss="mse"),
        "L-BFGS only (l1+mse; 150 + 250 evals)": rep(today, optimizer="lbfgs"),
        "L-BFGS + MSE; r only; 150 evals": rep(today, z_steps=0, r_steps=150, **lb),
        "clamped output (Hardtanh) only": rep(today, clamp=True),
        "new encoder-free default (4 starts + L-BFGS 120)": default_config(None),
        "4 starts + L-BFGS MSE r 100": rep(default_config(None), r_steps=100),
        "4 starts + L-BFGS MSE r 150": rep(default_config(None), r_steps=150),
        "4 starts + L-BFGS 120 (history 20)": rep(default_config(None), history=20),
    }
    if encoder is not None:
        r |= {
            "encoder alone (0 steps)": rep(today, z_steps=0, r_steps=0, encoder=encoder),
            "encoder start only (today's 400 Adam)": rep(today, encoder=encoder),
            "encoder + Adam r only; 100": rep(today, z_steps=0, r_steps=100, encoder=encoder),
            "encoder + L-BFGS MSE r 50": rep(default_config(encoder), r_steps=50),
            "encoder + L-BFGS MSE r 75": rep(default_config(encoder), r_steps=75),
            "encoder + L-BFGS MSE r 100": rep(default_config(encoder), r_steps=100),
            "encoder + L-BFGS MSE r 150": rep(default_config(encoder), r_steps=150),
            "encoder + L-BFGS 110; history 100": rep(
                default_config(encoder), r_steps=110, history=100
            ),
            "encoder + L-BFGS 130 (history 20)": rep(default_config(encoder), r_steps=130),
            "new default (encoder + L-BFGS 120; history 20)": default_config(encoder),
            "new default in bf16": rep(default_config(encoder), precision="bf16"),
            "new default + clamp": rep(default_config(encoder), clamp=True),
        }
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="dcgan", choices=["dcgan", "progan"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", default="", help="row names separated by commas (default: all)")
    p.add_argument("--json", default="")
    p.add_argument("--encoder", default="", help="an encoder file instead of the shipped one")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen, weights = load_generator(args.model)
    encoder = load_encoder(Path(args.encoder), gen) if args.encoder else model_encoder(gen)
    cases = targets(args.model, gen.resolution)
    todo = rows(encoder)
    if args.rows:
        todo = {k: v for k, v in todo.items() if k in args.rows.split(",")}
    print(f"{gen.model_id} ({weights}), threads {args.threads}, cases: {[c for c, _ in cases]}")
    out, ref = [], {}
    for name, cfg in todo.items():
        secs, ps, steps = [], [], []
        for _case, x in cases:
            t0 = time.perf_counter()
            inv = invert(gen, x, cfg)
            secs.append(time.perf_counter() - t0)
            ps.append(inv.psnr)
            steps.append(inv.steps)
        ref = ref or {"s": sum(secs), "psnr": ps}
        dps = np.mean(np.array(ps) - np.array(ref["psnr"]))
        line = (
            f"  {name:<36} {sum(secs):8.2f} s  {ref['s'] / sum(secs):6.1f}x  steps "
            f"{'/'.join(map(str, steps)):<12} psnr {' '.join(f'{v:5.2f}' for v in ps)} "
            f"(mean {np.mean(ps):5.2f}, {dps:+5.2f} vs today)  load {os.getloadavg()[0]:.1f}"
        )
        print(line, flush=True)
        out.append({"row": name, "seconds": secs, "psnr": ps, "steps": steps})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
