"""`ganpaint encoder train|info`: train an image → latent encoder for a model, inspect one.

Training draws fresh samples of the model every step (no data set). It writes
``OUT/last.pt`` every ``--checkpoint-s`` seconds (run the same command again to resume)
and ``OUT/encoder.pt`` (the small file to ship, best validation PSNR so far).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ganpaint.core.encoder import TrainConfig, TrainState, train
    from ganpaint.server.cli.main import UserError, load_generator

    if args.steps < 1 or args.batch < 1 or args.width < 4:
        raise UserError("--steps and --batch must be at least 1, --width at least 4")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator(args)
    cfg = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        width=args.width,
        max_width=args.max_width,
        seed=args.seed,
        checkpoint_s=args.checkpoint_s,
    )
    # Every option that changes the weights, spelled out (threads and --minutes do not).
    opts = [
        ("--model", args.model),
        ("--out", args.out),
        ("--steps", args.steps),
        ("--batch", args.batch),
        ("--lr", args.lr),
        ("--width", args.width),
        ("--max-width", args.max_width),
        ("--seed", args.seed),
    ]
    if args.checkpoint:
        opts.append(("--checkpoint", args.checkpoint))
    command = "ganpaint encoder train " + " ".join(f"{k} {shlex.quote(str(v))}" for k, v in opts)
    meta = {"command": command, "seed": args.seed, "model": args.model}
    stop_at = time.time() + args.minutes * 60 if args.minutes else None
    last_print = [0.0]

    def show(s: TrainState) -> None:
        now = time.time()
        if args.quiet or (now - last_print[0] < args.print_s and s.step != cfg.steps):
            return
        last_print[0] = now
        eta = (cfg.steps - s.step) / max(s.steps_per_s, 1e-9)
        val = f"{s.val_psnr:5.2f}" if s.val_psnr is not None else "  -  "
        frac = s.step / cfg.steps
        bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
        print(
            f"train [{bar}] {s.step}/{cfg.steps} loss {s.loss:.4f} val {val} dB "
            f"(best {s.best_psnr:5.2f}) {s.steps_per_s:.2f} it/s ETA {eta / 60:.0f} min",
            file=sys.stderr,
            flush=True,
        )

    state = train(gen, cfg, args.out, meta=meta, progress=show, stop_at=stop_at)
    info = {
        "step": state.step,
        "steps": cfg.steps,
        "best_val_psnr": round(state.best_psnr, 3),
        "encoder": str(Path(args.out) / "encoder.pt"),
        "resume": str(Path(args.out) / "last.pt"),
    }
    print(json.dumps(info) if args.json else " ".join(f"{k} {v}" for k, v in info.items()))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ganpaint.core.encoder import load_encoder
    from ganpaint.server.cli.main import load_generator

    gen = load_generator(args)
    enc = load_encoder(args.path, gen)
    info = {
        "model": gen.model_id,
        "arch": dict(enc.arch.__dict__),
        "parameters": sum(p.numel() for p in enc.parameters()),
        **enc.meta,
    }
    info.pop("config", None)
    print(json.dumps(info, indent=None if args.json else 1))
    return 0


def register(sub) -> None:
    from ganpaint.server.cli.main import add_model_args

    p = sub.add_parser("encoder", help="train or inspect an encoder (image → latent) for a model")
    esub = p.add_subparsers(dest="encoder_command", required=True)

    t = esub.add_parser("train", help="train (or resume) an encoder from the model's samples")
    add_model_args(t)
    t.add_argument("--out", type=Path, required=True, help="folder for last.pt and encoder.pt")
    t.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=int, default=32, help="channels of the first block (32)")
    t.add_argument("--max-width", type=int, default=256)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's)")
    t.add_argument("--checkpoint-s", type=float, default=180.0, help="seconds between saves")
    t.add_argument("--minutes", type=float, default=0.0, help="stop (resumable) after this long")
    t.add_argument("--print-s", type=float, default=10.0, help="seconds between progress lines")
    t.add_argument("--json", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    i = esub.add_parser("info", help="show an encoder file's architecture and provenance")
    i.add_argument("path", type=Path)
    add_model_args(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
