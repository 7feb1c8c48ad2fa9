"""The `ganpaint` command: models, reconstruct, edit, demo, and the commands of other modules
(concept, serve, bench) registered through their ``register(subparsers)``.

Every user error exits non-zero with one line on stderr; long runs draw a progress bar on
stderr; ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

from ganpaint.core import __version__
from ganpaint.core.adapt import DEFAULT_STEPS
from ganpaint.core.errors import one_line
from ganpaint.core.progress import Cancelled, Progress

# Modules that add sub-commands; each exposes register(subparsers).
COMMAND_MODULES = (
    "ganpaint.server.cli.concepts",
    "ganpaint.server.cli.serve",
    "ganpaint.server.cli.bench",
    "ganpaint.server.cli.encoder",
)


class UserError(Exception):
    """Anything the user can fix; printed as one line."""


def user_errors() -> tuple[type[BaseException], ...]:
    from ganpaint.core.concepts.record import ConceptError
    from ganpaint.core.generators import ModelError
    from ganpaint.core.photo import PhotoError
    from ganpaint.core.resolve import EditError

    return UserError, ModelError, PhotoError, ConceptError, EditError


class ProgressBar:
    """One self-overwriting line on stderr per stage; silent when stderr is not a terminal
    unless forced (then one line every ~10 %)."""

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.stage: str | None = None
        self.last_tenth = -1

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if p.stage != self.stage:
            if self.stage is not None and self.tty:
                self.stream.write("\n")
            self.stage, self.last_tenth = p.stage, -1
        frac = p.step / max(1, p.total)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        psnr = f" {p.psnr_keep:5.1f} dB" if p.psnr_keep is not None else ""
        eta = f" ETA {p.eta_s:4.0f}s" if p.eta_s is not None else ""
        line = f"{p.stage:<7} [{bar}] {p.step}/{p.total}{psnr}{eta}"
        if self.tty:
            self.stream.write("\r" + line)
            if p.step == p.total:
                self.stream.write("\n")
                self.stage = None
        elif int(frac * 10) > self.last_tenth:
            self.last_tenth = int(frac * 10)
            self.stream.write(line + "\n")
        self.stream.flush()


# -- shared options ------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser) -> None:
    from ganpaint.core.generators import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="model id (see `ganpaint models`)")
    p.add_argument("--checkpoint", type=Path, help="weights file in the model's published layout")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"G′ adaptation steps (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--variant",
        choices=["network", "direct"],
        default="network",
        help="perturbation: the method's network R (default) or direct δ",
    )
    p.add_argument(
        "--quality",
        choices=["faithful", "fast"],
        default="faithful",
        help="faithful: the method as published (default); fast: δ fine-tuned directly, from "
        "the region's previous fit when it has one, on a window around the edit, with early "
        "stopping (docs/performance.md)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_invert_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_invert_args(p: argparse.ArgumentParser) -> None:
    """The inversion's options, shared by the one-off commands and `ganpaint serve`."""
    p.add_argument(
        "--invert-steps",
        type=int,
        help="inversion steps cap (default: 120, from the model's encoder or from random starts)",
    )
    p.add_argument(
        "--invert-precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="arithmetic of G during the inversion; auto: bfloat16 on a CPU with bf16 units "
        "for models of 128 px or more, else float32 (docs/performance.md)",
    )


def load_generator(args: argparse.Namespace):
    import torch

    from ganpaint.core.generators import load_model

    torch.manual_seed(args.seed if hasattr(args, "seed") else 0)
    return load_model(args.model, args.device, checkpoint=args.checkpoint)


def fit_config(args: argparse.Namespace, gen=None):
    """The pipeline's settings from the flags (pipeline.fit_settings), with the model's
    encoder start when it has one."""
    from ganpaint.core.encoder import model_encoder
    from ganpaint.core.pipeline import fit_settings

    if args.steps < 1 or (args.invert_steps is not None and args.invert_steps < 2):
        raise UserError("--steps must be at least 1 and --invert-steps at least 2")
    encoder = model_encoder(gen) if gen is not None else None
    return fit_settings(
        args.quality,
        args.steps,
        encoder,
        args.invert_steps,
        args.invert_precision,
        args.seed,
        args.variant,
    )


def report(args: argparse.Namespace, result, out: Path, **extra) -> None:
    info = {
        "model": args.model,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "psnr_keep": round(result.psnr_keep, 3),
        "psnr_inversion": round(result.psnr_inversion, 3),
        "session_reused": result.session_reused,
        "output": str(out),
        # At the photo's resolution, inside the selection (core/metrics.py photo_metrics);
        # psnr_keep above is G′'s fit at the generator's resolution, outside the edit.
        **{k: _json_number(v) for k, v in result.metrics.items()},
        **extra,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"wrote {out}: psnr_keep {info['psnr_keep']:.2f} dB (inversion alone "
            f"{info['psnr_inversion']:.2f} dB), {result.steps} steps, {info['seconds']:.1f} s"
        )
        if "detail_ratio" in info:
            print(
                f"  in the selection at full size: psnr_inside {info['psnr_inside']} dB, "
                f"detail_ratio {info['detail_ratio']}, structure_correlation "
                f"{info['structure_correlation']}, edge_gradient_ratio "
                f"{info['edge_gradient_ratio']}, replaced {info['replaced_fraction']}"
            )


def _json_number(v: float) -> float | None:
    """Rounded; inf (identical pixels) and nan (nothing to measure) as null: JSON has neither."""
    return round(v, 3) if math.isfinite(v) else None


# -- commands ------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from ganpaint.core.generators import DEFAULT_MODEL, model_specs

    specs = model_specs()
    if args.json:
        print(json.dumps({"default": DEFAULT_MODEL, "models": [s.to_dict() for s in specs]}))
    else:
        for s in specs:
            mark = "*" if s.id == DEFAULT_MODEL else " "
            print(f"{mark} {s.id:<28} {s.resolution:>4}px  {s.source}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from ganpaint.core.generators import model_specs
    from ganpaint.core.generators.user_models import add_model

    builtin = {s.id for s in model_specs() if not s.added}
    rec = add_model(args.file, args.name, builtin)
    if args.json:
        print(json.dumps(rec))
    else:
        print(
            f"added {rec['id']}: {rec['format']}, {rec['resolution']}px, SHA-256 "
            f"{rec['sha256'][:16]}…, edit layer {rec['edit_layer']} (see `ganpaint models`)"
        )
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from ganpaint.core.imageio import read_image, write_image
    from ganpaint.core.pipeline import reconstruct_photo

    photo = read_image(args.image)
    gen = load_generator(args)
    result = reconstruct_photo(gen, photo, fit_config(args, gen), ProgressBar(not args.quiet))
    write_image(args.output, result.image)
    report(args, result, args.output)
    return 0


def parse_units(text: str | None, flag: str) -> list[int]:
    """ "418,3" -> [418, 3] (empty when not given)."""
    if not text:
        return []
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, got {text!r}") from None


def cmd_edit(args: argparse.Namespace) -> int:
    from ganpaint.core.imageio import read_image, read_mask, write_image
    from ganpaint.core.pipeline import edit_photo
    from ganpaint.core.resolve import resolve_edit

    photo = read_image(args.image)
    mask = read_mask(args.mask)
    gen = load_generator(args)
    spec = resolve_edit(
        gen,
        args.op,
        units=None if args.units is None else parse_units(args.units, "--units"),
        concept=args.concept,
        strength=args.strength,
        leave_out=parse_units(args.leave_out, "--leave-out"),
        remove_all=args.remove_all,
    )
    if spec.concept is not None and not spec.concept.supports(args.op):
        # usable by name, but say what the gallery found
        print(
            f"ganpaint: note: {args.op} {args.concept!r} is not among the concept's operations "
            f"({', '.join(spec.concept.ops)}): it may not do what the name says",
            file=sys.stderr,
        )
    result = edit_photo(gen, photo, mask, spec, fit_config(args, gen), ProgressBar(not args.quiet))
    write_image(args.output, result.image)
    if result.metrics.get("present_fraction") == 0:
        print(
            f"ganpaint: note: found no {spec.label()} in the selection, so the photo is "
            "unchanged; --remove-all switches the units off anyway",
            file=sys.stderr,
        )
    extra = {"units": list(spec.units)}
    if spec.concept is not None:
        extra["strength"] = spec.strength
    report(args, result, args.output, op=args.op, concept=spec.label(), **extra)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A before/after picture on the default model, made from nothing on disk."""
    from ganpaint.server.cli.demo import run_demo

    info = run_demo(args.output, steps=args.steps, progress=ProgressBar(not args.quiet))
    print(
        json.dumps(info)
        if args.json
        else f"wrote {args.output} ({info['seconds']:.1f} s, psnr_keep {info['psnr_keep']:.2f} dB)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganpaint", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ganpaint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the models; `models add FILE` adds a StyleGAN file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    msub = p.add_subparsers(dest="models_command")
    a = msub.add_parser(
        "add",
        help="add a StyleGAN2/3 file (NVIDIA .pkl, rosinality .pt), read without running its code",
    )
    a.add_argument("file", type=Path)
    a.add_argument("--name", help="model id (default: from the file name)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_models_add)

    p = sub.add_parser("reconstruct", help="fit G′ to a photo and render it (tests the fit)")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    add_model_args(p)
    add_fit_args(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("edit", help="add or remove a concept inside a selection")
    p.add_argument("image", type=Path)
    p.add_argument("--mask", type=Path, required=True, help="selection: white = edit")
    p.add_argument("-o", "--output", type=Path, required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--concept", help="concept name (see `ganpaint concept list`)")
    what.add_argument("--units", help="comma-separated unit indices at the edit layer")
    p.add_argument("--op", choices=["add", "remove"], required=True)
    p.add_argument(
        "--strength",
        choices=["low", "med", "high"],
        help="brush: 4 / 10 / 15 top units (default: the concept's own default, else high, "
        "the GANPaint demo's default)",
    )
    p.add_argument(
        "--leave-out",
        metavar="UNITS",
        help="comma-separated units to skip in the concept's ranking, e.g. 418 (our option; "
        "the GANPaint demo keeps every ranked unit)",
    )
    p.add_argument(
        "--remove-all",
        action="store_true",
        help="with --op remove: switch the units off in every selected cell, as the published "
        "method does, also where the concept's presence probe sees none of it",
    )
    add_model_args(p)
    add_fit_args(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("demo", help="edit a generated portrait; writes a before/after picture")
    p.add_argument("-o", "--output", type=Path, default=Path("ganpaint-demo.png"))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    errors = user_errors()
    t0 = time.perf_counter()
    try:
        return int(args.func(args) or 0)
    except errors as e:
        print(
            f"ganpaint: error: {one_line(e)}",
            file=sys.stderr,
        )
        return 2
    except Cancelled:
        print("ganpaint: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"ganpaint: interrupted after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
