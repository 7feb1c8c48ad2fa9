"""`ganpaint concept …`: the concept library of a model from the command line.

    ganpaint concept list [--model M] [--all] [--json]
    ganpaint concept show NAME [--json]
    ganpaint concept rename OLD NEW
    ganpaint concept delete NAME          (a built-in one is hidden; `restore` shows it again)
    ganpaint concept restore NAME
    ganpaint concept export -o FILE [NAME ...]
    ganpaint concept import FILE [--replace]
    ganpaint concept learn IMAGE --mask M --name NAME
    ganpaint concept discover [--groups K] -o SHEET.png

server/cli/main.py calls ``register(subparsers)``; each sub-command sets ``func(args) -> int``.
Errors are ConceptError / ModelError / PhotoError, which cli.main prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _library(args: argparse.Namespace, generator=None):
    from ganpaint.core.concepts.library import ConceptLibrary
    from ganpaint.core.generators import get_spec

    get_spec(args.model)  # unknown model: one line listing the known ones

    def warn(message: str) -> None:
        print(f"ganpaint: warning: {message}", file=sys.stderr)

    return ConceptLibrary(args.model, generator=generator, on_problem=warn)


def _add_model(p: argparse.ArgumentParser, loads: bool = False) -> None:
    from ganpaint.core.generators import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="model id (see `ganpaint models`)")
    if loads:
        p.add_argument("--checkpoint", type=Path, help="weights file in the published layout")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _values_text(c, source: dict) -> str:
    if c.values is None:
        return "0.99 quantiles of the loaded weights (filled in on use)"
    text = " ".join(f"{v:.4g}" for v in c.values)
    if source.get("kind") == "published":
        text += f"\n          (published 0.99 quantiles: {source['source']})"
    return text


# -- commands -------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    lib = _library(args)
    concepts = lib.list(include_hidden=args.all)
    user = {c.name for c in lib.user_concepts()}
    hidden = set(lib.hidden())
    rows = []
    for c in concepts:
        if c.hidden and not args.all:  # unnamed: usable by name, not listed
            continue
        rows.append(
            {
                **c.to_dict(),
                "ops": list(c.ops),
                "origin": "user" if c.name in user else "built-in",
                "hidden": c.hidden or (c.name in hidden and c.name not in user),
            }
        )
    if args.json:
        print(json.dumps({"model": lib.model_id, "concepts": rows}))
        return 0
    if not rows:
        print(f"no concepts for {lib.model_id}")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        flag = " (hidden)" if r["hidden"] else ""
        print(
            f"{r['name']:<{width}}  {r['source']:<10} {r['origin']:<8} "
            f"{r['layer']}  {len(r['units']):>3} units  {'/'.join(r['ops']):<10}{flag}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    lib = _library(args)
    c = lib.get(args.name)
    origin = lib.source_of(args.name)
    source = lib.values_source(args.name)
    if args.json:
        print(
            json.dumps(
                {
                    **c.to_dict(),
                    "origin": origin,
                    "values_source": source,
                    "default_strength": c.brush(),
                }
            )
        )
        return 0
    print(f"name:     {c.name} ({origin}, {c.source})")
    print(f"model:    {c.model}  layer {c.layer}")
    print(f"units:    {' '.join(map(str, c.units))}")
    print(f"values:   {_values_text(c, source)}")
    if c.scores is not None:
        print(f"scores:   {' '.join(f'{s:.3g}' for s in c.scores)}")
    if c.excluded:
        print(f"excluded: {' '.join(map(str, c.excluded))}")
    strengths = ", ".join(f"{k} {min(n, len(c.units))}" for k, n in c.strengths.items())
    print(f"brush:    {strengths} units (default {c.brush()})")
    print(f"ops:      {', '.join(c.ops)}" + ("  (hidden: not in menus)" if c.hidden else ""))
    if c.where:
        print(f"where:    {c.where}")
    print(f"created:  {c.created}")
    if c.description:
        print(f"about:    {c.description}")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    c = _library(args).rename(args.old, args.new)
    print(f"renamed {args.old!r} to {c.name!r}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    lib = _library(args)
    builtin = lib.is_builtin(args.name)
    lib.delete(args.name)
    note = f" (built-in: hidden; `ganpaint concept restore {args.name}` shows it again)"
    print(f"deleted {args.name!r}" + (note if builtin else ""))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    _library(args).restore(args.name)
    print(f"restored built-in {args.name!r}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    names = _library(args).export(args.output, args.names or None)
    print(f"exported {len(names)} concept(s) to {args.output}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    names = _library(args).import_file(args.file, replace=args.replace)
    print(f"imported {len(names)} concept(s): {', '.join(names)}")
    return 0


def _generator(args: argparse.Namespace):
    import torch

    from ganpaint.core.generators import load_model

    torch.manual_seed(args.seed)
    return load_model(args.model, args.device, checkpoint=args.checkpoint)


def _progress(args: argparse.Namespace):
    from ganpaint.server.cli.main import ProgressBar

    return ProgressBar(not args.quiet)


def cmd_learn(args: argparse.Namespace) -> int:
    from ganpaint.core.concepts.learn import learn_concept
    from ganpaint.core.concepts.record import ConceptError, check_name
    from ganpaint.core.imageio import read_image, read_mask
    from ganpaint.core.invert import InvertConfig
    from ganpaint.core.pipeline import PipelineConfig

    check_name(args.name)
    if args.invert_steps < 2 or args.units < 1:
        raise ConceptError("--invert-steps must be at least 2 and --units at least 1")
    lib = _library(args)
    if args.name in lib.names() and not args.replace:
        raise ConceptError(f"concept {args.name!r} already exists; use --replace or another name")
    photo = read_image(args.image)
    mask = read_mask(args.mask)
    gen = _generator(args)
    z_steps = round(args.invert_steps * 3 / 8)  # the proportion cli.fit_config uses
    cfg = PipelineConfig(
        invert=InvertConfig(z_steps=z_steps, r_steps=args.invert_steps - z_steps, seed=args.seed)
    )
    concept = learn_concept(
        gen, photo, mask, args.name, cfg, k=args.units, progress=_progress(args)
    )
    lib.add(concept, replace=args.replace)
    if args.json:
        print(json.dumps(concept.to_dict()))
    else:
        print(
            f"learned {concept.name!r}: units {' '.join(map(str, concept.units))} "
            f"({concept.description})"
        )
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from ganpaint.core.concepts.discover import contact_sheet, discover, sample_activations
    from ganpaint.core.concepts.record import ConceptError

    if args.groups < 1 or args.samples < args.groups:
        raise ConceptError("--groups must be at least 1 and --samples at least --groups")
    lib = _library(args)
    gen = _generator(args)
    acts = sample_activations(
        gen, args.samples, gen.edit_index, args.seed, progress=_progress(args)
    )
    found = discover(gen, args.groups, args.samples, seed=args.seed, acts=acts)
    found.names = [f"{args.prefix}-{i + 1:02d}" for i in range(len(found.groups))]
    concepts = found.concepts(gen.model_id)
    if not args.no_save:
        clash = sorted({c.name for c in concepts} & set(lib.names()))
        if clash and not args.replace:
            raise ConceptError(
                f"concepts already exist: {', '.join(clash)}; use --replace or --prefix"
            )
        for c in concepts:
            lib.add(c, replace=True)
    contact_sheet(gen, found, args.output, acts=acts)
    if args.json:
        print(
            json.dumps(
                {
                    "model": gen.model_id,
                    "sheet": str(args.output),
                    "saved": not args.no_save,
                    "concepts": [c.to_dict() for c in concepts],
                }
            )
        )
    else:
        for c in concepts:
            print(f"{c.name}: {len(c.units)} units, top {' '.join(map(str, c.units[:5]))}")
        saved = "" if args.no_save else f"; saved {len(concepts)} concepts"
        print(f"wrote {args.output}{saved}")
    return 0


# -- wiring ---------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("concept", help="list, learn and discover concepts")
    sub = p.add_subparsers(dest="concept_command", required=True)

    q = sub.add_parser("list", help="the concepts of a model")
    _add_model(q)
    q.add_argument(
        "--all", action="store_true", help="include hidden built-ins (deleted or unnamed)"
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("show", help="one concept's units and values")
    q.add_argument("name")
    _add_model(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("rename", help="rename a concept")
    q.add_argument("old")
    q.add_argument("new")
    _add_model(q)
    q.set_defaults(func=cmd_rename)

    q = sub.add_parser("delete", help="delete a concept (built-ins are hidden)")
    q.add_argument("name")
    _add_model(q)
    q.set_defaults(func=cmd_delete)

    q = sub.add_parser("restore", help="show a hidden built-in concept again")
    q.add_argument("name")
    _add_model(q)
    q.set_defaults(func=cmd_restore)

    q = sub.add_parser("export", help="write concepts to a file others can import")
    q.add_argument("names", nargs="*", help="concepts to export (default: all)")
    q.add_argument("-o", "--output", type=Path, required=True)
    _add_model(q)
    q.set_defaults(func=cmd_export)

    q = sub.add_parser("import", help="add the concepts of an exported file")
    q.add_argument("file", type=Path)
    q.add_argument("--replace", action="store_true", help="replace concepts of the same name")
    _add_model(q)
    q.set_defaults(func=cmd_import)

    q = sub.add_parser("learn", help="learn a concept from a selection on a photo")
    q.add_argument("image", type=Path)
    q.add_argument("--mask", type=Path, required=True, help="selection: white = the example")
    q.add_argument("--name", required=True)
    q.add_argument("--units", type=int, default=15, help="units to keep (default 15)")
    q.add_argument("--invert-steps", type=int, default=400, help="inversion steps (400)")
    q.add_argument("--replace", action="store_true", help="replace a concept of that name")
    q.add_argument("--json", action="store_true")
    _add_model(q, loads=True)
    q.set_defaults(func=cmd_learn)

    q = sub.add_parser("discover", help="group units into unnamed concepts; draw a sheet")
    q.add_argument("-o", "--output", type=Path, required=True, help="contact sheet PNG")
    q.add_argument("--groups", type=int, default=12, help="number of groups (default 12)")
    q.add_argument("--samples", type=int, default=512, help="random samples (default 512)")
    q.add_argument("--prefix", default="group", help="name prefix (default group)")
    q.add_argument("--no-save", action="store_true", help="only draw the sheet")
    q.add_argument("--replace", action="store_true", help="replace concepts of the same name")
    q.add_argument("--json", action="store_true")
    _add_model(q, loads=True)
    q.set_defaults(func=cmd_discover)
