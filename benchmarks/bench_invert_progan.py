"""ProGAN-256 (random weights) inversion: Adam (today's r phase) against L-BFGS on the MSE
from the same start, PSNR and seconds every 10 steps, and how much of G's output the
Hardtanh clamp would cut. One process; a loaded machine, so compare rows.

    python benchmarks/bench_invert_progan.py [--threads 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_invert import targets  # noqa: E402

from ganpaint.core.generators.base import freeze  # noqa: E402
from ganpaint.core.generators.progan import ProGAN256  # noqa: E402
from ganpaint.core.invert import InvertConfig, _optimise, start_latent  # noqa: E402
from ganpaint.core.metrics import psnr  # noqa: E402
from ganpaint.core.progress import Progress, Reporter  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the bench's random weights
    gen = freeze(ProGAN256())
    k = gen.edit_index
    ((case, x),) = targets("progan", gen.resolution)
    with torch.no_grad():
        t0 = time.perf_counter()
        for z in gen.sample_latent(4, torch.Generator().manual_seed(0)):
            gen(z[None])
        one = (time.perf_counter() - t0) / 4
        t0 = time.perf_counter()
        gen(gen.sample_latent(4, torch.Generator().manual_seed(0)))
        batched = (time.perf_counter() - t0) / 4
        out = gen(gen.sample_latent(8, torch.Generator().manual_seed(1)))
    outside = (out.abs() > 1).float().mean().item()
    print(f"{case}: start judged one at a time {one:.2f} s, in a batch of 4 {batched:.2f} s each")
    print(f"pixels of G's samples outside [-1, 1] (what a clamp cuts): {outside:.1%}", flush=True)
    z0 = start_latent(gen, x, InvertConfig(starts=4))
    with torch.no_grad():
        r0 = gen.run(z0, 0, k + 1)
        print(f"start: {psnr(gen.run(r0, k + 1), x):.2f} dB", flush=True)
    rows = {
        "Adam lr 0.01, L1+MSE (today's r phase)": InvertConfig(),
        "L-BFGS, MSE": InvertConfig(optimizer="lbfgs", loss="mse"),
        "L-BFGS, MSE, clamped output": InvertConfig(optimizer="lbfgs", loss="mse", clamp=True),
    }
    for name, cfg in rows.items():
        marks: list[str] = []
        t0 = time.perf_counter()

        def seen(pr: Progress, marks=marks, t0=t0) -> None:
            marks.append(f"{pr.step}: {pr.psnr_keep:.2f} dB {time.perf_counter() - t0:.0f} s")

        rep = Reporter("invert", args.steps, seen, None, every=10)
        _optimise(gen, r0, k + 1, x, None, args.steps, cfg.lr_r, cfg, rep, 0)
        print(f"  {name}: " + "; ".join(marks), flush=True)


if __name__ == "__main__":
    main()
