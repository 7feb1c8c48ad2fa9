"""The gallery's 100 % crops made through a real GIMP 3, the installed plug-in and the real
server, on the enlarged portraits of benchmarks/bench_recolour.py (fetched by
benchmarks/photos.py, never committed):

    docs/concepts/img/at100/<case>-<concept>.jpg   photo | result layer on the canvas
    docs/concepts/img/at100/stack-<case>.jpg       photo | first edit | a second edit above it

    sudo .venv/bin/python tests/gimp/make_at100.py [--quality fast|faithful] [--feather 15]
        [--selection hair|crescent]
        [--concepts C ...] [--stack CASE] [--out DIR] [CASE ...]

Each selection is made in GIMP as a user makes it: the hair traced with the free-select tool
(benchmarks/bench_recolour.py's Case.hair; ``--selection crescent``: an ellipse around the
head, the face's ellipse subtracted), feathered (Select › Feather). Each edit is the menu's
Add Concept with strength high, run non-interactively (no dialog, no question asked). The
stack: the first concept on the hair, then the second on the hair's upper half, a second
result layer above the first (docs/concepts/img/at100/stack-*.jpg: photo | first | both).
Root only: it uses the chroot of the GIMP tests (built if missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gimp_env import (
    REPO,
    Gimp,
    ensure_root,
    gimp_root_path,
    run_batch_script,
    served_plugin,
)
from PIL import Image

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_recolour import CASES, head, save_crop  # noqa: E402

WORK = "/tmp/ganpaint-at100"


def box(ellipse: tuple[float, ...], scale: float) -> list[int]:
    """(cx, cy, rx, ry) in crop px -> GIMP's [x, y, w, h] on the enlarged head."""
    cx, cy, rx, ry = (v * scale for v in ellipse)
    return [round(cx - rx), round(cy - ry), round(2 * rx), round(2 * ry)]


def run_edits(gimp: Gimp, name: str, photo_inside: str, edits: list[dict], fast: bool) -> dict:
    params = {
        "out": f"{WORK}/{name}",
        "photo": photo_inside,
        "edits": edits,
        "procedure": "plug-in-ganpaint-add",
        "args": {"strength": "high", "fast": fast},
    }
    info, run = run_batch_script(gimp, params, timeout=3600)
    if info is None or any(r["status"] != "success" for r in info["runs"]):
        raise RuntimeError(f"{name}: GIMP run failed:\n{json.dumps(info)}\n{run.output[-3000:]}")
    info["dir"] = gimp.path(params["out"])
    return info


def canvas(info: dict, name: str) -> np.ndarray:
    return np.asarray(Image.open(info["dir"] / name).convert("RGB"))


def selection(info: dict, i: int, shape: tuple[int, ...]) -> np.ndarray:
    raw = (info["dir"] / f"selection{i}.raw").read_bytes()
    return np.frombuffer(raw, np.uint8).reshape(shape[:2])


def one_edit(gimp, name, rgb, inside, hair, concept, fast, out: Path) -> None:
    """``concept`` on the hair: photo | canvas after it."""
    stem = f"{name}-{concept.replace(' ', '-')}"
    info = run_edits(gimp, stem, inside, [{**hair, "args": {"concept": concept}}], fast)
    save_crop(selection(info, 0, rgb.shape), out / f"{stem}.jpg", rgb, canvas(info, "after0.png"))
    print(f"{stem}: {info['runs'][0]['seconds']:.1f} s in GIMP", flush=True)


def stack(gimp, name, rgb, inside, hair, first, second, fast, out: Path) -> None:
    """``first`` on the hair, then ``second`` on its upper half (a second result layer):
    photo | after the first | after both."""
    ys = hair["polygon"][1::2] if "polygon" in hair else [hair["ellipse"][1]]
    top = min(ys)
    bottom = max(ys) if "polygon" in hair else top + hair["ellipse"][3]
    upper = {**hair, "within": [0, top, rgb.shape[1], (bottom - top) // 2]}
    edits = [{**hair, "args": {"concept": first}}, {**upper, "args": {"concept": second}}]
    info = run_edits(gimp, f"{name}-stack", inside, edits, fast)
    after = [canvas(info, f"after{i}.png") for i in (0, 1)]
    save_crop(selection(info, 0, rgb.shape), out / f"stack-{name}.jpg", rgb, *after)
    print(f"stack-{name}: {first}, then {second} on the upper half", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=list(CASES))
    p.add_argument("--quality", choices=("fast", "faithful"), default="fast")
    p.add_argument("--feather", type=float, default=15)
    p.add_argument("--selection", choices=("hair", "crescent"), default="hair")
    p.add_argument("--concepts", nargs="+", default=["dark hair", "blond hair"])
    p.add_argument("--stack", default="obama", help="the case of the two-edit stack ('': none)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "concepts" / "img" / "at100")
    args = p.parse_args(argv)
    root = gimp_root_path()
    ensure_root(root)
    gimp = Gimp(root)
    args.out.mkdir(parents=True, exist_ok=True)
    fast = args.quality == "fast"
    with served_plugin(gimp, log_tail=1500):
        for name in args.cases:
            case = CASES[name]
            rgb, _ = head(case)
            inside = f"{WORK}/{name}.png"
            gimp.path(WORK).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(gimp.path(inside))
            if args.selection == "hair":  # traced with the free-select tool
                corners = [v * case.scale for point in case.hair for v in point]
                hair = {"polygon": corners, "feather": args.feather}
            else:
                hair = {
                    "ellipse": box(case.head, case.scale),
                    "subtract": box(case.face, case.scale),
                    "feather": args.feather,
                }
            for concept in args.concepts:
                one_edit(gimp, name, rgb, inside, hair, concept, fast, args.out)
            if name == args.stack and len(args.concepts) >= 2:
                first, second = args.concepts[1], args.concepts[0]
                stack(gimp, name, rgb, inside, hair, first, second, fast, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
