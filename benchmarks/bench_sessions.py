"""Sessions benchmark: the second edit of the same image is faster than the first.

Runs an in-process edit server on a free loopback port and edits one photo twice through
the real client. The first edit inverts the region and fits G′ from scratch; the second
finds the session (model + crop content) in the server's cache, skips the inversion and
warm-starts G′ from the first fit. Model loading is kept out of the timings by a warm-up
job on another image.

    python benchmarks/bench_sessions.py [--steps 1000] [--invert-steps N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from ganpaint.core.adapt import DEFAULT_STEPS
from ganpaint.core.generators import DEFAULT_MODEL
from ganpaint.server.client.ganpaint_client import Client, RawImage
from ganpaint.server.config import ServerConfig
from ganpaint.server.testing import running_server


def test_photo(size: int, seed: int) -> np.ndarray:
    """A smooth RGBA 8-bit picture with some texture, [size, size, 4]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(5 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=2)
    rgb = (0.5 + 0.4 * rgb + rng.normal(0, 0.02, rgb.shape)).clip(0, 1)
    alpha = np.ones((size, size, 1))
    return (np.concatenate([rgb, alpha], axis=2) * 255).round().astype(np.uint8)


def raw(arr: np.ndarray) -> RawImage:
    h, w = arr.shape[:2]
    return RawImage(arr.tobytes(), w, h, 1 if arr.ndim == 2 else arr.shape[2], "u8")


def timed_edit(client: Client, photo: RawImage, mask: RawImage, edit: dict) -> dict:
    """One edit; wall time and where it went (stage times from progress timestamps)."""
    marks: dict[str, float] = {}

    def progress(p: dict) -> None:
        marks.setdefault(p["stage"], time.perf_counter())

    t0 = time.perf_counter()
    res = client.edit(photo, mask, progress=progress, **edit)
    t1 = time.perf_counter()
    # The job starts with a "load" report; the first "adapt" report comes 10 steps in (the
    # same offset for both edits), so invert_s is the inversion, or the lack of one.
    adapt_from = marks.get("adapt", t1)
    invert_from = marks.get("load", marks.get("invert", adapt_from))
    return {
        "wall_s": round(t1 - t0, 3),
        "invert_s": round(adapt_from - invert_from, 3),
        "adapt_s": round(t1 - adapt_from, 3),
        "server_s": round(res["seconds"], 3),
        "session_reused": res["session_reused"],
        "psnr_keep": round(res["psnr_keep"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"G′ steps per edit ({DEFAULT_STEPS})"
    )
    p.add_argument("--quality", default="faithful", help="G′ fit: faithful (default) or fast")
    p.add_argument("--invert-steps", type=int, help="inversion steps (default: the core's)")
    p.add_argument("--size", type=int, default=256, help="photo side in pixels")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=2, help="photos, each edited twice")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*",
        device=args.device,
        model=args.model,
        steps=args.steps,
        invert_steps=args.invert_steps,
    )
    mask = np.zeros((args.size, args.size), np.uint8)
    q = args.size // 4
    mask[q : 3 * q, q : 3 * q] = 255
    edit = dict(
        op="remove", units=[3, 5, 7, 11], model=args.model, steps=args.steps, quality=args.quality
    )

    with running_server(cfg, log=lambda line: print(line, file=sys.stderr)) as srv:
        with Client(srv.endpoint, timeout_s=60.0) as client:
            client.reconstruct(raw(test_photo(64, seed=99)), model=args.model, steps=1)  # warm-up
            pairs = []
            for k in range(args.repeats):  # a new photo per pair, so each first edit is cold
                photo = raw(test_photo(args.size, seed=k))
                pairs.append([timed_edit(client, photo, raw(mask), edit) for _ in range(2)])
    first = [p[0] for p in pairs]
    second = [p[1] for p in pairs]
    t1 = statistics.median(r["wall_s"] for r in first)
    t2 = statistics.median(r["wall_s"] for r in second)
    report = {
        "model": args.model,
        "device": srv.device.type,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "quality": args.quality,
        "size": args.size,
        "repeats": args.repeats,
        "first_s": round(t1, 3),
        "second_s": round(t2, 3),
        "ratio": round(t2 / t1, 3),
        "speedup": round(t1 / t2, 3),
        "pairs": pairs,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{args.model} on {report['device']} ({report['threads']} threads), "
            f"{args.steps} G′ steps ({args.quality}), {args.size}x{args.size} RGBA u8, "
            f"{args.repeats} photo(s)"
        )
        for k, (a, b) in enumerate(pairs):
            for label, r in (("first ", a), ("second", b)):
                print(
                    f"  photo {k} {label} edit {r['wall_s']:7.2f} s  "
                    f"(invert {r['invert_s']:6.2f} s, adapt {r['adapt_s']:6.2f} s, "
                    f"session reused: {r['session_reused']}, "
                    f"psnr_keep {r['psnr_keep']:.2f} dB)"
                )
        print(
            f"  median first {t1:.2f} s, second {t2:.2f} s: second/first = {t2 / t1:.3f} "
            f"({t1 / t2:.2f}x faster)"
        )
    reused = all(b["session_reused"] and not a["session_reused"] for a, b in pairs)
    return 0 if reused else 1


if __name__ == "__main__":
    sys.exit(main())
