"""Make the documentation's pictures with a real GIMP 3 and the real server:

    docs/img/dialog.png        the Add Concept… dialog (GIMP under Xvfb, openbox for the frame)
    docs/img/gimp-before.png   the photo, with the selection outlined
    docs/img/gimp-after.png    the flattened result of the edit made through that dialog

    sudo .venv/bin/python tests/gimp/make_screenshots.py [--concept "dark hair"] [--op add]
        [--steps 300] [--seed 0] [--ellipse CX CY RX RY] [--out docs/img]

With --photo FILE (a real photo, e.g. a wallpaper from benchmarks/photos.py) the edit runs
on it instead, and the README's 100 % crops are written instead of the three pictures:
docs/img/photo-before.jpg and photo-after.jpg, --crop X Y W H (fractions of the photo).

Root only: it uses the trixie chroot of the GIMP tests (built if missing, plus xvfb, xdotool,
ImageMagick and openbox). The dialog is really used: the script presses OK in it, and the
edit runs with the plug-in's progress bar in GIMP's window.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from gimp_env import (
    CHROOT_GIMP_DIR,
    GIMP_SERIES,
    REPO,
    Gimp,
    ensure_root,
    gimp_root_path,
    make_photo,
    served_plugin,
)
from PIL import Image

EXTRA = ("xvfb", "xauth", "xdotool", "imagemagick", "openbox")
WORK = "/tmp/ganpaint-shots"

GUI_SCRIPT = """
import json, os, time
from gi.repository import Gegl, Gimp, Gio
P = json.loads({params!r})
W = P["work"]
img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(W + "/photo.png"))
layer = img.get_layers()[0]
cx, cy, rx, ry = P["ellipse"]
img.select_ellipse(Gimp.ChannelOps.REPLACE, cx - rx, cy - ry, 2 * rx, 2 * ry)
Gimp.Selection.feather(img, P["feather"])

# "Before": the photo with the selection outlined (on a copy).
before = img.duplicate()
outline = Gimp.Layer.new(before, "outline", before.get_width(), before.get_height(),
                         Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
before.insert_layer(outline, None, 0)
Gimp.context_push()
color = Gegl.Color.new("yellow")
Gimp.context_set_foreground(color)
Gimp.context_set_stroke_method(Gimp.StrokeMethod.LINE)
Gimp.context_set_line_width(2.0)
Gimp.context_set_antialias(True)
outline.edit_stroke_selection()
Gimp.context_pop()
before.flatten()
Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, before, Gio.File.new_for_path(W + "/before.png"),
               None)
before.delete()

# What the dialog shows (an interactive run starts from these when there are no last-used
# values; the driver removes those).
proc = Gimp.get_pdb().lookup_procedure(P["procedure"])
cfg = proc.create_config()
cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
cfg.set_property("image", img)
cfg.set_core_object_array("drawables", [layer])
cfg.set_property("concept", P["concept"])
cfg.set_property("strength", P["strength"])
cfg.set_property("steps", P["steps"])
cfg.set_property("fast", bool(P.get("fast", False)))

Gimp.Display.new(img)
Gimp.displays_flush()
cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
r = proc.run(cfg)
done_time = time.time()  # the result layer exists: against ok.time, the wait after OK
status = r.index(0)
info = {{"status": status.value_nick, "done_time": done_time,
        "message": r.index(1) if status != Gimp.PDBStatusType.SUCCESS else None,
        "layers": [l.get_name() for l in img.get_layers()]}}
if status == Gimp.PDBStatusType.SUCCESS:
    info["psnr_keep"] = r.index(2)
    flat = img.duplicate()
    flat.flatten()
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, flat, Gio.File.new_for_path(W + "/after.png"),
                   None)
with open(W + "/gui.json", "w") as f:
    json.dump(info, f)
"""

DRIVER = """#!/bin/sh
# Runs inside xvfb-run in the chroot: GIMP with the batch script, grab the dialog, press OK.
export HOME=/root
cd {work}
openbox >/dev/null 2>&1 &
sleep 1
gimp-{GIMP_SERIES} --no-splash --batch-interpreter=python-fu-eval -b - < gui.py > gimp.log 2>&1 &
GP=$!
W=
for i in $(seq 1 {wait}); do
    W=$(xdotool search --name "{title}" 2>/dev/null | head -1)
    [ -n "$W" ] && break
    sleep 1
done
[ -n "$W" ] || {{ echo "no dialog"; kill $GP; exit 1; }}
xdotool mousemove 1270 850
xdotool windowactivate --sync "$W" 2>/dev/null
sleep 4
import -frame -window "$W" dialog.png
date +%s.%N > ok.time
xdotool windowactivate --sync "$W" key Return  # OK (XTEST: GTK ignores sent events)
sleep 8
import -window root progress.png
for i in $(seq 1 {job_wait}); do
    [ -f gui.json ] && break
    sleep 1
done
sleep 1
import -window root screen.png
kill $GP 2>/dev/null
wait $GP 2>/dev/null
[ -f gui.json ]
"""


def run_gui(gimp: Gimp, photo, params: dict, job_wait: int = 1200) -> dict:
    """Open ``photo`` in GIMP (under Xvfb, in the chroot), select the ellipse, run
    Add/Remove Concept… interactively, grab the dialog, press OK, wait for the edit. Returns
    gui.json's content plus "ok_to_layer_s" (the wait after OK), "dir" (the work folder,
    host path), "seconds", "log" and "gimp_log". The plug-in must be installed and the
    server running."""
    work = gimp.path(WORK)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for last in gimp.path(CHROOT_GIMP_DIR).glob("plug-in-settings/*plug-in-ganpaint*"):
        last.unlink()  # the dialog starts from the arguments given, not last-used values
    gimprc = gimp.path(f"{CHROOT_GIMP_DIR}/gimprc")
    gimprc.parent.mkdir(parents=True, exist_ok=True)
    if "show-welcome-dialog" not in (gimprc.read_text() if gimprc.exists() else ""):
        with open(gimprc, "a") as f:
            f.write("(show-welcome-dialog no)\n")
    Image.fromarray(photo).save(work / "photo.png")
    op = params["op"]
    script_params = {"work": WORK, "procedure": f"plug-in-ganpaint-{op}", **params}
    (work / "gui.py").write_text(GUI_SCRIPT.format(params=json.dumps(script_params)))
    (work / "driver.sh").write_text(
        textwrap.dedent(
            DRIVER.format(
                work=WORK,
                title=f"GANPaint: {op} a concept",
                wait=120,
                job_wait=job_wait,
                GIMP_SERIES=GIMP_SERIES,
            )
        )
    )
    (work / "driver.sh").chmod(0o755)
    t0 = time.monotonic()
    r = gimp.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x860x24", f"{WORK}/driver.sh"],
        timeout=job_wait + 300,
    )
    info = json.loads((work / "gui.json").read_text()) if (work / "gui.json").exists() else {}
    if "done_time" in info and (work / "ok.time").exists():  # OK pressed → result layer
        info["ok_to_layer_s"] = info["done_time"] - float((work / "ok.time").read_text())
    info.update(
        dir=work,
        seconds=time.monotonic() - t0,
        log=r.stdout + r.stderr,
        gimp_log=(work / "gimp.log").read_text(errors="replace")
        if (work / "gimp.log").exists()
        else "",
    )
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concept", default="dark hair")
    p.add_argument("--op", choices=["add", "remove"], default="add")
    p.add_argument("--strength", choices=["low", "med", "high"], default="high")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="generator seed of the test photo")
    p.add_argument("--size", type=int, default=384, help="photo size in px")
    p.add_argument(
        "--ellipse",
        type=float,
        nargs=4,
        metavar=("CX", "CY", "RX", "RY"),
        default=[0.39, 0.43, 0.16, 0.09],
        help="selection, fractions of the size",
    )
    p.add_argument("--feather", type=int, default=12)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--photo", type=Path, help="a real photo instead of the generated portrait")
    p.add_argument(
        "--crop",
        type=float,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        default=[0.3, 0.35, 0.25, 0.25],
        help="with --photo: the 100 %% crop to write, fractions of the photo",
    )
    p.add_argument("--job-wait", type=int, default=1200, help="seconds to wait for the edit")
    args = p.parse_args(argv)

    root = gimp_root_path()
    ensure_root(root, EXTRA)
    gimp = Gimp(root)
    photo = (
        np.asarray(Image.open(args.photo).convert("RGB"))
        if args.photo
        else make_photo(args.size, args.seed)
    )
    ph, pw = photo.shape[:2]
    cx, cy, rx, ry = args.ellipse
    params = {
        "ellipse": [round(cx * pw), round(cy * ph), round(rx * pw), round(ry * ph)],
        "feather": args.feather,
        "op": args.op,
        "concept": args.concept,
        "strength": args.strength,
        "steps": args.steps,
    }
    with served_plugin(gimp):
        info = run_gui(gimp, photo, params, args.job_wait)
    print(json.dumps({k: v for k, v in info.items() if k not in ("log", "gimp_log")}, default=str))
    if info.get("status") != "success":
        print(info["log"], info["gimp_log"], sep="\n", file=sys.stderr)
        return 1
    work = info["dir"]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.photo:
        x, y, w, h = (round(v * n) for v, n in zip(args.crop, (pw, ph, pw, ph), strict=True))
        for name in ("before", "after"):
            shot = Image.open(work / f"{name}.png").convert("RGB").crop((x, y, x + w, y + h))
            shot.save(args.out / f"photo-{name}.jpg", quality=88)
        print(f"wrote {args.out}/photo-before.jpg, photo-after.jpg ({w}×{h} at 100 %)")
        return 0
    shutil.copyfile(work / "dialog.png", args.out / "dialog.png")
    shutil.copyfile(work / "before.png", args.out / "gimp-before.png")
    shutil.copyfile(work / "after.png", args.out / "gimp-after.png")
    print(f"wrote {args.out}/dialog.png, gimp-before.png, gimp-after.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
