"""`python -m installer`: install the plug-in for every GIMP 3 found (each series reads its own
user folder), check the chain, or remove it from all of them."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from .checking import check, print_checks
from .common import CLIENT_SRC, DEFAULT_ADDRESS, DEFAULT_MODEL, FLATPAK_ID, InstallError
from .copying import copy_plugin, every_plugin_dir, remove_plugin
from .dependencies import ensure_modules
from .finding import GimpInstall, assumed, by_folder, find_gimp, python_for


def install(
    plugin_dir: Path,
    *,
    address: str | None = None,
    start_command: list[str] | None | bool = True,
    python: list[str] | None = None,
    gimps: list[GimpInstall] = (),
    apt: bool = False,
    vendor: bool | None = None,
    deps: bool = True,
    client_src: Path = CLIENT_SRC,
    log=print,
) -> dict:
    """Install (or update) the plug-in in one plug-in folder; returns what was done.

    ``vendor``: None = only when GIMP's Python lacks the modules and apt is not the way;
    True = always; False = never. ``python``: GIMP's Python (default: that of ``gimps``, else
    the one found)."""
    config = copy_plugin(
        plugin_dir,
        address=address,
        start_command=start_command,
        gimps=gimps,
        client_src=client_src,
        log=log,
    )
    folder = plugin_dir / "ganpaint"
    done = {"folder": str(folder), "config": config, "python": python or [], "deps": "skipped"}
    if not deps:
        return done
    pythons = [python] if python else [g.python for g in gimps if g.python]
    if not pythons and gimps:  # a Snap: its Python cannot be run from out here
        for g in gimps:
            log(f"cannot check zmq/msgpack for {g.describe()}: {g.python_source}; {g.note}")
        done["deps"] = "missing"
        return done
    if not pythons:
        found = find_gimp()
        pythons = [found[0].python if found else python_for(None)[0]]
    states = []
    for py in {tuple(p): p for p in pythons}.values():
        states.append(ensure_modules(py, folder, apt=apt, vendor=vendor, log=log))
    done["python"] = pythons[0]
    done["deps"] = "missing" if "missing" in states else states[0]
    return done


def install_for(gimps: list[GimpInstall], log=print, **kw) -> list[dict]:
    """Install into the folder of each GIMP (one folder may serve several)."""
    done = []
    for folder, readers in by_folder(gimps).items():
        log(f"{'; '.join(g.describe() for g in readers)} reads plug-ins from {folder}")
        done.append(install(folder, gimps=readers, log=log, **kw))
    return done


def uninstall(plugin_dirs: list[Path], log=print) -> int:
    """Remove the plug-in from each folder; returns how many held it."""
    removed = sum(remove_plugin(d, log=log) for d in plugin_dirs)
    if not removed:
        log("nothing to remove: the plug-in is in none of " + ", ".join(map(str, plugin_dirs)))
    return removed


def targets(args, log, install: bool = True) -> list[GimpInstall]:
    """The GIMPs to install for: --plugin-dir (one folder), --gimp, --flatpak, else all."""
    if args.plugin_dir:
        found = find_gimp(args.gimp)
        readers = [g for g in found if g.plugin_dir == args.plugin_dir]
        if not readers:
            series = next((g.series for g in found), "3.0")
            readers = [GimpInstall("given", args.gimp, None, series, *python_for(None))]
        for g in readers:
            g.plugin_dir = args.plugin_dir
        return readers
    found = find_gimp(args.gimp)
    if args.flatpak:
        found = [g for g in found if g.kind == "flatpak"]
        if not found:
            raise InstallError(f"no Flatpak GIMP 3 found (flatpak info {FLATPAK_ID})")
    if not found and install:
        found = assumed()
        log(
            "no GIMP 3 found: installing into the user folders of GIMP "
            + " and ".join(g.series for g in found)
            + " (a GIMP installed later finds it there; --plugin-dir picks another folder)"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m installer",
        description="Install the GANPaint plug-in into every GIMP 3 found.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="diagnose every link of the chain")
    mode.add_argument("--uninstall", action="store_true", help="remove the plug-in everywhere")
    p.add_argument(
        "--plugin-dir",
        type=Path,
        help="one GIMP 3 plug-in folder (default: that of every GIMP 3 found)",
    )
    p.add_argument(
        "--flatpak",
        action="store_true",
        help="only the Flatpak GIMP (it reads the host's ~/.config/GIMP/3.x/plug-ins)",
    )
    p.add_argument("--gimp", help="only this GIMP executable (e.g. gimp-console-3.2)")
    p.add_argument("--python", help="the Python GIMP runs plug-ins with (default: found)")
    p.add_argument("--address", help=f"server address (default {DEFAULT_ADDRESS})")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--start-command",
        help="command the plug-in runs to start the server when none answers, "
        "e.g. '/path/to/venv/bin/ganpaint serve' (default: `ganpaint "
        "serve` of the Python running this installer, if it has one)",
    )
    start.add_argument(
        "--no-start-command",
        action="store_true",
        help="never start the server from GIMP; only say how to",
    )
    deps = p.add_mutually_exclusive_group()
    deps.add_argument(
        "--apt",
        action="store_true",
        help="Debian/Ubuntu: apt-get install python3-zmq python3-msgpack",
    )
    deps.add_argument(
        "--vendor",
        action="store_true",
        help="copy msgpack and a pyzmq wheel for GIMP's Python next to the plug-in",
    )
    deps.add_argument("--no-deps", action="store_true", help="do not touch Python modules")
    p.add_argument("--client", type=Path, default=CLIENT_SRC, help=argparse.SUPPRESS)
    p.add_argument("--model", help=f"model --check expects (default {DEFAULT_MODEL})")
    p.add_argument("--json", action="store_true", help="--check: print JSON")
    args = p.parse_args(argv)
    python = shlex.split(args.python) if args.python else None
    try:
        if args.uninstall:
            dirs = [args.plugin_dir] if args.plugin_dir else every_plugin_dir(find_gimp(args.gimp))
            uninstall(dirs)
            return 0
        gimps = targets(args, print, install=not args.check)
        if args.check:
            results = check(
                args.plugin_dir,
                gimps=gimps,
                python=python,
                address=args.address,
                model=args.model,
            )
            if args.json:
                print(json.dumps([asdict(c) for c in results], indent=2, default=str))
                return 0 if all(c.ok for c in results) else 1
            return 0 if print_checks(results) else 1
        if args.no_start_command:
            start_cmd: list[str] | None | bool = None
        elif args.start_command:
            start_cmd = shlex.split(args.start_command)
        else:
            start_cmd = True
        done = install_for(
            gimps,
            address=args.address,
            start_command=start_cmd,
            python=python,
            apt=args.apt,
            vendor=True if args.vendor else None,
            deps=not args.no_deps,
            client_src=args.client,
        )
        if any(d["deps"] == "missing" for d in done):
            print(
                "The plug-in is installed, but GIMP's Python cannot talk to the server yet "
                "(see above). Then run: python -m installer --check"
            )
            return 2
        print("Done. Restart GIMP, then check everything with: python -m installer --check")
        return 0
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
