"""Write the built-in concept files shipped in core/concepts/data/.

    python scripts/make_starter_concepts.py                 # both files + the contact sheet
    python scripts/make_starter_concepts.py --check         # exit 1 if the files differ
    python scripts/make_starter_concepts.py --only published

- ``progan-churchoutdoor.json``: the published GAN Dissection rankings of the GANPaint demo
  (published.py; unit 418 included, as the demo), values from the demo's published 0.99
  quantiles (``data/on_values/``).
- ``digiface-dcgan64.json``: the default model's discovered starter set — exactly what
  ``ganpaint concept discover --groups 12 --samples 512 --seed 0`` finds, with the groups
  that a person could name from the contact sheet renamed (NAMES, keyed by a group's best
  unit so a different clustering never gets a wrong name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ganpaint.core.concepts.discover import contact_sheet, discover, sample_activations
from ganpaint.core.concepts.files import dumps
from ganpaint.core.concepts.library import FORMAT, VERSION, builtin_dir
from ganpaint.core.concepts.published import MODEL_ID as PUBLISHED_MODEL
from ganpaint.core.concepts.published import published_concepts
from ganpaint.core.generators import DEFAULT_MODEL, load_model

GROUPS, SAMPLES, SEED = 12, 512, 0
CREATED = "2025-01-01T00:00:00Z"  # fixed: regenerating gives the same bytes
# Best unit of a group → the name read off the contact sheet (samples where the group fires
# most, outlined, and what switching it on/off draws). Groups without a clear reading keep
# "group-NN": 120 (a mixed bag), 107 (dark areas, draws a brown smudge), 105 (face edges),
# 57 (lit side of the face), 81 (shading), 113 (scattered patches).
NAMES: dict[int, str] = {
    154: "mouth",  # open mouths and teeth; switching on draws teeth-like stripes
    219: "bright background",  # white walls and sky; switching on paints a white patch
    173: "dark background",  # black backdrops; switching on paints black
    63: "yellow",  # yellow-green backdrops and warm light; switching on paints yellow
    104: "bright skin",  # lit foreheads and cheeks; switching on paints smooth pale skin
    133: "eyes",  # eye sockets and brows
}


def file_text(model_id: str, concepts) -> str:
    data = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_id,
        "concepts": [c.to_dict() for c in concepts],
    }
    return dumps(data) + "\n"


def published_text() -> str:
    return file_text(PUBLISHED_MODEL, published_concepts())


def starter_text(sheet: Path | None) -> str:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gen = load_model(DEFAULT_MODEL, "cpu")
    acts = sample_activations(gen, SAMPLES, gen.edit_index, SEED)
    found = discover(gen, GROUPS, SAMPLES, seed=SEED, acts=acts)
    found.names = [NAMES.get(g[0], f"group-{i + 1:02d}") for i, g in enumerate(found.groups)]
    if sheet is not None:
        contact_sheet(gen, found, sheet, acts=acts)
        print(f"wrote {sheet}", file=sys.stderr)
    return file_text(DEFAULT_MODEL, found.concepts(DEFAULT_MODEL, created=CREATED))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["published", "starter"])
    p.add_argument("--check", action="store_true", help="compare with the files, write nothing")
    p.add_argument(
        "--sheet",
        type=Path,
        default=Path("starter-concepts.png"),
        help="contact sheet of the starter set (default starter-concepts.png)",
    )
    args = p.parse_args(argv)
    jobs = {
        "published": (PUBLISHED_MODEL, published_text),
        "starter": (DEFAULT_MODEL, lambda: starter_text(None if args.check else args.sheet)),
    }
    status = 0
    for key, (model_id, make) in jobs.items():
        if args.only and args.only != key:
            continue
        path = builtin_dir() / f"{model_id}.json"
        text = make()
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            print(f"{path}: {'up to date' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
