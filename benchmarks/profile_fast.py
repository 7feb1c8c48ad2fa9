"""Marginal per-step cost on one model (interleaved rounds, so machine load hits all alike): the
faithful step (full frame, R), the same with direct δ instead of R, and the fast path's
windowed direct-δ step; then torch.profiler tables of the faithful and the fast step.

    python benchmarks/profile_fast.py [--model progan|dcgan] [--steps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ganpaint.core.adapt import AdaptConfig, adapt
from ganpaint.core.fast import FastConfig, fast_adapt
from ganpaint.server.cli.bench import load_generator, make_case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["progan", "dcgan"], default="progan")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    gen, weights = load_generator(args.model)
    h, k = gen.default_split(), gen.edit_index
    x, r, r_e, _, keep = make_case(gen)
    with torch.no_grad():
        zh0, zh = gen.run(r, k + 1, h), gen.run(r_e, k + 1, h)
    base = adapt(gen, zh0, x, torch.ones_like(keep), AdaptConfig(steps=2)).fit
    direct = "direct"
    runs = {
        "faithful step (full frame, R)": lambda n: adapt(gen, zh, x, keep, AdaptConfig(steps=n)),
        "full frame, direct δ": lambda n: adapt(gen, zh, x, keep, AdaptConfig(n, variant=direct)),
        "fast step (window, direct δ)": lambda n: fast_adapt(
            gen, zh, x, keep, None, FastConfig(max_steps=n, patience=10**9), base
        ),
    }
    # Marginal cost per step: (time of 4n steps − time of n steps) / 3n, so set-up and the
    # final full-frame render are left out.
    n = args.steps
    times: dict[str, list[float]] = {k2: [] for k2 in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(n)
            t1 = time.perf_counter()
            fn(4 * n)
            times[name].append((time.perf_counter() - t1 - (t1 - t0)) / (3 * n))
    print(f"{gen.model_id} ({weights}), threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(f"  {name:<32} min {min(ts):.4f} s/step  all {[round(t, 4) for t in ts]}")
    first = min(times[next(iter(times))])
    for name, ts in times.items():
        print(f"  faithful / {name}: {first / min(ts):.2f}x per step")
    for name in ("faithful step (full frame, R)", "fast step (window, direct δ)"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runs[name](n)
        print(name)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
