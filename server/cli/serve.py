"""`ganpaint serve`: run the edit server until SIGINT/SIGTERM (then exit 0)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ganpaint.server.config import DEFAULT_BIND, ClusterConfig, Limits, ServerConfig

EXIT_REFUSED = 2
MIB = 1024 * 1024


def register(subparsers) -> None:
    from ganpaint.core.adapt import DEFAULT_STEPS
    from ganpaint.core.fast import QUALITIES
    from ganpaint.core.generators import DEFAULT_MODEL

    from .main import add_invert_args

    limits = Limits()
    p = subparsers.add_parser(
        "serve",
        help="run the local edit server (ZeroMQ) for the GIMP plug-in",
        description="Run the edit server. It listens on loopback only unless --allow-remote "
        "and CURVE keys are given. Protocol: docs/protocol.md.",
    )
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"ZeroMQ endpoint (default {DEFAULT_BIND})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--model", default=DEFAULT_MODEL, help="model for requests that name none")
    p.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="G′ steps when a request names none"
    )
    p.add_argument(
        "--quality",
        default="faithful",
        choices=QUALITIES,
        help="G′ fit when a request names none (fast: local, early-stopping fit)",
    )
    add_invert_args(p)
    p.add_argument("--cache-mb", type=int, default=512, help="memory for cached sessions (MiB)")
    p.add_argument(
        "--share-sessions",
        action="store_true",
        help="let every client reuse every client's cached sessions (trusted seats only; by "
        "default a client finds only its own, so no one learns what another worked on)",
    )
    p.add_argument("--max-side", type=int, default=limits.max_side, help="longest image side")
    p.add_argument("--max-pixels", type=int, default=limits.max_pixels, help="width × height")
    p.add_argument("--max-steps", type=int, default=limits.max_steps)
    p.add_argument("--max-queue", type=int, default=limits.max_queue, help="waiting jobs")
    p.add_argument(
        "--max-pending-mb",
        type=int,
        default=limits.max_pending_bytes // MIB,
        help="memory for the pixels of waiting and running jobs and undelivered results "
        "(MiB); past it, requests are answered busy",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        help="clients connected at once; more are refused until one leaves (each may make "
        "ZeroMQ hold a message or two, ≈ 2.2 MiB, in memory)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=limits.heartbeat_timeout_s,
        help="cancel a job when its client is silent this long (s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; 1 is far faster on a busy machine)",
    )
    p.add_argument(
        "--cluster",
        metavar="ray[=ADDRESS]",
        help="run the jobs on Ray workers (pip install 'ganpaint[cluster]'): 'ray' starts a "
        "cluster on this machine, 'ray=auto' joins the one this machine is a node of (any "
        "address ray.init accepts); docs/deploy.md",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --cluster: worker actors, one per GPU (or CPU workers without GPUs)",
    )
    p.add_argument("--no-download", action="store_true", help="never download model weights")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[MODEL=]FILE",
        help="weights file to use for MODEL (default: --model) instead of the cache; not "
        "hash-checked; repeat for several models",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --bind (needs --curve-dir)",
    )
    p.add_argument("--curve-dir", type=Path, help="CURVE keys made by --make-keys")
    p.add_argument(
        "--make-keys", type=Path, metavar="DIR", help="create CURVE keys in DIR and exit"
    )
    p.set_defaults(func=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from ganpaint.server.cli.main import UserError
    from ganpaint.server.security import curve_files

    counts = ("steps", "max_side", "max_pixels", "max_steps", "max_queue", "max_connections")
    for name in (*counts, "max_pending_mb", "cache_mb"):
        if getattr(args, name) < (0 if name == "cache_mb" else 1):
            raise UserError(f"--{name.replace('_', '-')} is too small")
    if args.invert_steps is not None and args.invert_steps < 2:
        raise UserError("--invert-steps must be at least 2")
    if args.heartbeat_timeout <= 0:
        raise UserError("--heartbeat-timeout must be positive")
    limits = Limits(
        max_side=args.max_side,
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_queue=args.max_queue,
        max_pending_bytes=args.max_pending_mb * MIB,
        max_connections=args.max_connections,
        heartbeat_timeout_s=args.heartbeat_timeout,
        heartbeat_s=min(1.0, args.heartbeat_timeout / 4),
    )
    checkpoints = parse_checkpoints(args.checkpoint, args.model)
    return ServerConfig(
        cluster=cluster_from_args(args),
        checkpoints=checkpoints,
        bind=args.bind,
        device=args.device,
        model=args.model,
        steps=args.steps,
        quality=args.quality,
        invert_steps=args.invert_steps,
        invert_precision=args.invert_precision,
        session_budget_bytes=args.cache_mb * 1024 * 1024,
        share_sessions=args.share_sessions,
        allow_remote=args.allow_remote,
        curve=curve_files(args.curve_dir) if args.curve_dir else None,
        download=not args.no_download,
        limits=limits,
    )


def cluster_from_args(args: argparse.Namespace) -> ClusterConfig | None:
    """--cluster ray[=ADDRESS] --workers N; Ray must be installed (an optional extra)."""
    import importlib.util

    from ganpaint.server.cli.main import UserError

    if args.cluster is None:
        if args.workers != 1:
            raise UserError("--workers needs --cluster ray[=ADDRESS]")
        return None
    engine, _, address = args.cluster.partition("=")
    if engine != "ray":
        raise UserError(f"--cluster {args.cluster}: expected ray or ray=ADDRESS")
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # a module set to None (blocked) in sys.modules
        found = False
    if not found:
        raise UserError("--cluster needs Ray: pip install 'ganpaint[cluster]'")
    return ClusterConfig(address=address or None, workers=args.workers, threads=args.threads)


def parse_checkpoints(items: list[str], default_model: str) -> dict[str, Path]:
    """["FILE", "MODEL=FILE", ...] -> {model id: existing file}; bad ones are UserErrors."""
    from ganpaint.core.generators import get_spec
    from ganpaint.server.cli.main import UserError

    out: dict[str, Path] = {}
    for item in items:
        model, sep, file = item.partition("=")
        if not sep or "/" in model or "\\" in model:  # a plain path (which may hold '=')
            model, file = default_model, item
        get_spec(model)  # unknown model: one line listing the known ones
        path = Path(file).expanduser()
        if not path.is_file():
            raise UserError(f"--checkpoint {item}: no such file {path}")
        if model in out:
            raise UserError(f"--checkpoint given twice for {model}")
        out[model] = path
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from ganpaint.core.generators import get_spec
    from ganpaint.server.cli.main import UserError
    from ganpaint.server.security import BindRefused, make_keys
    from ganpaint.server.server import EditServer

    if args.make_keys:
        paths = make_keys(args.make_keys)
        print(
            f"wrote CURVE keys to {args.make_keys}:\n"
            f"  server: {paths['server_secret']} (keep private; serve with "
            f"--curve-dir {args.make_keys})\n"
            f"  give the client {paths['client_secret']} and {paths['server_public']}\n"
            f"  authorise more clients by adding their public .key files to "
            f"{paths['authorised'].parent}"
        )
        return 0
    cfg = config_from_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    get_spec(cfg.model)  # an unknown default model is a start-up error, not a per-job one
    try:
        server = EditServer(cfg)
        server.bind()
    except (BindRefused, *cluster_errors(cfg)) as e:
        print(f"ganpaint serve: {e}", file=sys.stderr)
        return EXIT_REFUSED

    def stop(signum, frame) -> None:
        server.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.serve()
    return 0


def cluster_errors(cfg: ServerConfig) -> tuple[type[Exception], ...]:
    """What a cluster's start raises for a person to read (Ray imported only with one)."""
    if cfg.cluster is None:
        return ()
    from ganpaint.server.cluster.front import ClusterError

    return (ClusterError,)
