"""Write the built-in concept files shipped in core/concepts/data/.

    python scripts/make_starter_concepts.py                 # both files + the contact sheet
    python scripts/make_starter_concepts.py --check         # exit 1 if the files differ
    python scripts/make_starter_concepts.py --only published

- ``progan-churchoutdoor.json``: the published GAN Dissection rankings of the GANPaint demo
  (published.py; unit 418 included, as the demo), values from the demo's published 0.99
  quantiles (``data/on_values/``).
- ``digiface-dcgan64.json``: the default model's built-ins, two kinds:
  * learned from examples (LEARNED): GAN samples (seed 0, the first 96) that show a thing —
    glasses, dark hair, … picked by eye from ``--samples-sheet`` — against the samples that
    do not, in the region of the face where the thing is (learn.concept_from_examples);
    their presence levels are calibrated on real photos without faces (BACKGROUND_PHOTOS,
    fetched from the package registries on first use);
  * discovered (``ganpaint concept discover --groups 12 --samples 512 --seed 0``), the
    groups that a person could name from the contact sheet renamed (NAMES, keyed by a
    group's best unit so a different clustering never gets a wrong name); groups nobody
    could name are ``hidden`` (usable by name, not in menus).
  Each gets ``ops`` and ``where`` from its gallery (docs/concepts/digiface-dcgan64.md,
  scripts/make_gallery.py): only the operations that do what the name says.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ganpaint.core.concepts.background import invert_windows, photo_windows
from ganpaint.core.concepts.discover import contact_sheet, discover, sample_activations
from ganpaint.core.concepts.files import dumps
from ganpaint.core.concepts.learn import concept_from_examples
from ganpaint.core.concepts.library import FORMAT, VERSION, builtin_dir
from ganpaint.core.concepts.published import MODEL_ID as PUBLISHED_MODEL
from ganpaint.core.concepts.published import published_concepts
from ganpaint.core.concepts.quantiles import on_values
from ganpaint.core.concepts.record import Concept
from ganpaint.core.concepts.regions import box_mask
from ganpaint.core.generators import DEFAULT_MODEL, load_model
from ganpaint.core.imageio import read_image

GROUPS, SAMPLES, SEED = 12, 512, 0
CREATED = "2025-01-01T00:00:00Z"  # fixed: regenerating gives the same bytes
EXAMPLES, EXAMPLE_SEED = 96, 0  # GAN samples the learned concepts' examples are taken from
# Real photos without faces whose inverted windows calibrate the learned concepts' presence
# levels (core/concepts/background.py): KDE wallpapers that no benchmark measures on, and
# scikit-image's (benchmarks/photos.py fetches them; bench_remove's photos stay held out).
BACKGROUND_PHOTOS = ("Autumn", "ColorfulCups", "summer_1am", "chelsea", "coffee", "motorcycle_left")


@dataclass(frozen=True)
class Learned:
    positives: tuple[int, ...]  # sample indices (of EXAMPLES at EXAMPLE_SEED) that show it
    region: str  # a key of regions.FACE_REGIONS
    ops: tuple[str, ...]  # what works, from the gallery
    where: str
    gain: float = 3.0
    hidden: bool = False  # tried, does not do what its name says on real photos


# Sample indices read off the sheet of the first 96 samples (--samples-sheet).
LEARNED: dict[str, Learned] = {
    # No "remove" for the hair colours: the units' remove recoloured any hair (it changed
    # faces without the colour 0.5-0.6x as much as faces with it), and gated by presence
    # it keeps only 0.06-0.30 of that on held-out samples (docs/performance.md, "A remove
    # acts only where the concept is").
    "dark hair": Learned(
        (30, 36, 40, 46, 48, 70, 71, 74),
        "hair",
        ("add",),
        "the hair above a face: add darkens it",
    ),
    "blond hair": Learned(
        (3, 14, 24, 32, 33, 37, 47, 79, 87, 91),
        "hair",
        ("add",),
        "the hair above a face; on photos the upper hair turns blond, hair near the hairline "
        "stays as it was",
        hidden=True,
    ),
    "grey hair": Learned(
        (9, 17, 59, 85, 93, 94),
        "hair",
        ("add",),
        "the hair above a face; on photos a faint lightening, on dark hair light blotches",
        hidden=True,
    ),
    "open mouth": Learned(
        (5, 6, 10, 13, 14, 24, 29, 36, 42, 50, 53, 58, 83, 86),
        "mouth",
        ("remove",),
        "an open or smiling mouth; on real photos its probe finds no open mouth to close",
        hidden=True,
    ),
    "glasses": Learned(
        (5, 8, 25, 42, 51, 53, 62, 68, 83, 90),
        "eyes",
        ("add",),
        "across both eyes; draws frame-like smudges on GAN samples, nothing on photos",
        hidden=True,
    ),
    "moustache": Learned(
        (14, 21, 63, 64, 67, 73, 84),
        "upper lip",
        ("add",),
        "between nose and mouth; on photos it only blurs the mouth",
        hidden=True,
    ),
}


@dataclass(frozen=True)
class Named:
    name: str
    ops: tuple[str, ...]
    where: str
    hidden: bool = False  # named, but on real photos it does not do what the name says


# Best unit of a discovered group → the name read off the contact sheet (samples where the
# group fires most, outlined, and what switching it on/off draws) and what the gallery shows
# works. Groups missing here are hidden; 154 ("mouth": add smears dark lips, remove does
# nothing on photos) and 133 ("eyes": add draws brow- or frame-like smudges, never eyes)
# were named before and are hidden now.
NAMES: dict[int, Named] = {
    219: Named(
        "bright background",
        ("add",),
        "the background beside a face; on photos a white glow or a brightening",
        hidden=True,
    ),
    173: Named(
        "dark background",
        ("add",),
        "the background beside a face; on photos a flat black patch",
        hidden=True,
    ),
    63: Named(
        "yellow background",
        ("add",),
        "the background beside a face; on photos a yellow tint",
        hidden=True,
    ),
    104: Named(
        "highlight",
        ("add", "remove"),
        "skin of a face; on photos add paints a pale blotch and remove a dark red one",
        hidden=True,
    ),
}


def sample_sheet(gen, path: Path) -> Path:
    """The EXAMPLES samples, numbered: what LEARNED's indices refer to."""
    from PIL import Image, ImageDraw

    with torch.no_grad():
        z = gen.sample_latent(EXAMPLES, torch.Generator().manual_seed(EXAMPLE_SEED))
        img = ((gen(z).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    cell, cols = 96, 12
    sheet = Image.new("RGB", (cols * cell, -(-EXAMPLES // cols) * (cell + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, a in enumerate(img):
        r, c = divmod(i, cols)
        tile = Image.fromarray(a).resize((cell, cell), Image.NEAREST)
        sheet.paste(tile, (c * cell, r * (cell + 12) + 12))
        draw.text((c * cell + 2, r * (cell + 12)), str(i), fill="black")
    sheet.save(path)
    return path


def background_acts(gen) -> torch.Tensor:
    """The edit layer's representation of BACKGROUND_PHOTOS' windows: [N, C, h, w]."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from photos import photo as photo_path

    acts = []
    for name in BACKGROUND_PHOTOS:
        photo = read_image(photo_path(name))
        acts.append(invert_windows(gen, photo, photo_windows(*photo.shape[:2])))
        print(f"inverted {len(acts[-1])} windows of {name}", file=sys.stderr)
    return torch.cat(acts)


def learned_concepts(gen) -> list[Concept]:
    k = gen.edit_index
    with torch.no_grad():
        z = gen.sample_latent(EXAMPLES, torch.Generator().manual_seed(EXAMPLE_SEED))
        acts = gen.run(z, 0, k + 1)
    scale = on_values(gen, k)
    background = background_acts(gen)
    out = []
    for name, spec in LEARNED.items():
        positive = torch.zeros(EXAMPLES, dtype=torch.bool)
        positive[list(spec.positives)] = True
        c = concept_from_examples(
            acts,
            torch.from_numpy(box_mask(spec.region, gen.resolution))[None, None],
            positive,
            name,
            gen.model_id,
            gen.infos[k].name,
            scale,
            gain=spec.gain,
            background=background,
            description=(
                f"learned from {len(spec.positives)} of {EXAMPLES} GAN samples (seed "
                f"{EXAMPLE_SEED}) showing it in the {spec.region} region, against the others; "
                f"values {spec.gain:g}× their mean there"
            ),
        )
        out.append(
            replace(c, created=CREATED, ops=list(spec.ops), where=spec.where, hidden=spec.hidden)
        )
    return out


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
    found.names = [
        NAMES[g[0]].name if g[0] in NAMES else f"group-{i + 1:02d}"
        for i, g in enumerate(found.groups)
    ]
    if sheet is not None:
        contact_sheet(gen, found, sheet, acts=acts)
        print(f"wrote {sheet}", file=sys.stderr)
    discovered = []
    for units, c in zip(found.groups, found.concepts(DEFAULT_MODEL, created=CREATED), strict=True):
        named = NAMES.get(units[0])
        if named is None:
            discovered.append(replace(c, hidden=True))
        else:
            discovered.append(
                replace(c, ops=list(named.ops), where=named.where, hidden=named.hidden)
            )
    return file_text(DEFAULT_MODEL, learned_concepts(gen) + discovered)


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
    p.add_argument(
        "--samples-sheet",
        type=Path,
        help="also draw the numbered GAN samples the learned concepts' examples are picked from",
    )
    args = p.parse_args(argv)
    if args.samples_sheet:
        print(f"wrote {sample_sheet(load_model(DEFAULT_MODEL, 'cpu'), args.samples_sheet)}")
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
