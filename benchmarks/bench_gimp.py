"""The first and the second fast edit of a photo through a real GIMP 3.

Wall seconds of the plug-in procedure's call, as the batch script of tests/gimp times it:
read the layer and the selection, send the crop, wait for the server, make the result
layer. GIMP 3 runs in the chroot of tests/gimp (built on first use, needs root), against a
real `ganpaint serve --quality fast` with the default model and its default inversion. A
warm-up edit of another picture loads the model first, as a running server would have it.
Each selection of FIRST_EDIT_CASES is a region the server has not seen (first edit), then
edited again (second edit: its session is reused). Then, on a fresh server, the same first
edits through the dialog (GIMP's GUI under Xvfb, tests/gimp/make_screenshots.py's driver,
which keeps the dialog open 4 s, as a user choosing does): timed from pressing OK to the
result layer, the region inverted while the dialog was open (docs/protocol.md §6.7a).

    sudo .venv/bin/python benchmarks/bench_gimp.py [--threads 2] [--concept "dark hair"]
        [--no-dialog]                     # GANPAINT_GIMP_SERIES=3.2 for GIMP 3.2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "gimp")]

import numpy as np  # noqa: E402
from bench_first_edit import FIRST_EDIT_CASES  # noqa: E402
from gimp_env import (  # noqa: E402
    Gimp,
    ensure_root,
    free_port,
    gimp_root_path,
    install_plugin,
    make_photo,
    mounted_proc,
    run_batch_script,
    start_server,
    stop_server,
)
from photos import photo as photo_path  # noqa: E402
from PIL import Image  # noqa: E402


def run_batch(gimp: Gimp, params: dict) -> dict:
    """One GIMP run of tests/gimp/batch_script.py; its result.json."""
    info, run = run_batch_script(gimp, params, timeout=900)
    if info is None:
        raise RuntimeError(f"GIMP run failed (exit {run.returncode}):\n{run.output[-3000:]}")
    return info


def serving(gimp: Gimp, tmp: str, threads: int):
    """A fresh `ganpaint serve --quality fast` (no sessions yet), the plug-in pointed at it."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {"OMP_NUM_THREADS": str(threads), "GANPAINT_DATA": tmp}
    args = ["--quality", "fast", "--threads", str(threads)]
    server = start_server(address, Path(tmp) / "serve.log", args, env=env)
    install_plugin(gimp, address)
    return server


def batch_rows(gimp: Gimp, procedure: str, edit_args: dict) -> None:
    """Non-interactive (as a script calls it): no dialog, so nothing is inverted ahead."""
    warm = run_batch(
        gimp,
        {
            "out": "/tmp/ganpaint-bench/warmup",
            "photo": "/tmp/ganpaint-bench/warmup.png",
            "ellipse": [60, 40, 80, 60],
            "procedure": procedure,
            "args": edit_args,
        },
    )
    print(f"warm-up edit (model load included): {warm['runs'][0]['seconds']:.2f} s")
    for i, (case, _photo, cy, cx, side) in enumerate(FIRST_EDIT_CASES["dcgan"]):
        info = run_batch(
            gimp,
            {
                "out": f"/tmp/ganpaint-bench/case{i}",
                "photo": "/tmp/ganpaint-bench/astronaut.png",
                "ellipse": [cx - side // 2, cy - side // 2, side, side],
                "feather": 4,
                "procedure": procedure,
                "repeat": 2,
                "args": edit_args,
            },
        )
        runs = info["runs"]
        if any(r["status"] != "success" for r in runs):
            raise RuntimeError(f"{case}: {runs}")
        print(
            f"  {case:<28} script: first edit {runs[0]['seconds']:5.2f} s   second edit "
            f"{runs[1]['seconds']:5.2f} s   load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def dialog_rows(gimp: Gimp, photo, args) -> None:
    """Through the dialog (GIMP's GUI under Xvfb): the plug-in inverts while the dialog is
    open (4 s here, make_screenshots' driver), the wait is timed from OK to the layer."""
    from make_screenshots import EXTRA, run_gui

    ensure_root(gimp.root, EXTRA)
    warm = {"ellipse": [100, 60, 40, 30], "feather": 4, "op": args.op}
    run_gui(
        gimp,
        make_photo(256, seed=5),
        {**warm, "concept": args.concept, "strength": "high", "steps": 0, "fast": True},
        job_wait=300,
    )
    for case, _photo, cy, cx, side in FIRST_EDIT_CASES["dcgan"]:
        params = {
            "ellipse": [cx, cy, side // 2, side // 2],
            "feather": 4,
            "op": args.op,
            "concept": args.concept,
            "strength": "high",
            "steps": 0,
            "fast": True,
        }
        info = run_gui(gimp, photo, params, job_wait=300)
        if info.get("status") != "success" or "ok_to_layer_s" not in info:
            raise RuntimeError(f"{case}: {info.get('message')}\n{info['log'][-2000:]}")
        print(
            f"  {case:<28} dialog: first edit, OK to layer {info['ok_to_layer_s']:5.2f} s   "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_gimp", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--concept", default="dark hair")
    p.add_argument("--op", default="add", choices=["add", "remove"])
    p.add_argument("--no-dialog", action="store_true", help="only the scripted rows")
    args = p.parse_args(argv)
    root = gimp_root_path()
    ensure_root(root)
    gimp = Gimp(root)
    work = gimp.path("/tmp/ganpaint-bench")
    work.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_photo(256, seed=5)).save(work / "warmup.png")
    shutil.copy(photo_path("astronaut"), work / "astronaut.png")
    astronaut = np.asarray(Image.open(work / "astronaut.png").convert("RGB"))
    edit_args = {"concept": args.concept, "fast": True}
    rows = [lambda: batch_rows(gimp, f"plug-in-ganpaint-{args.op}", edit_args)]
    if not args.no_dialog:
        rows.append(lambda: dialog_rows(gimp, astronaut, args))
    with mounted_proc(root):
        for row in rows:  # each on a fresh server: every case's region is new to it
            with tempfile.TemporaryDirectory() as tmp:
                server = serving(gimp, tmp, args.threads)
                try:
                    row()
                finally:
                    stop_server(server)
    print(f"GIMP {os.environ.get('GANPAINT_GIMP_SERIES', '3.0')}, threads {args.threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
