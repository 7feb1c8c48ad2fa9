"""The published GAN Dissection rankings for ProGAN churchoutdoor, layer4 (512 units, 8×8).

Unit indices are facts from GAN Dissection (Bau et al., ICLR 2019), as used by the GANPaint
demo: the top 15 units by IoU with each class over many samples. Unit 418 is left out of
edits, as the research code does, because it makes objects grow rather than drawing one
class; the concepts record it under ``excluded``. The "on" values are not published: they
are each unit's 0.99-quantile activation over random samples of the loaded weights, filled in
at use time from a cache (quantiles.py).

``scripts/make_starter_concepts.py`` writes ``data/progan-churchoutdoor.json`` from here.
"""

from __future__ import annotations

from .record import Concept

MODEL_ID = "progan-churchoutdoor"
LAYER = "layer4"
EXCLUDED_UNITS = (418,)
# Fixed so that regenerating the data file gives the same bytes.
CREATED = "2019-01-01T00:00:00Z"
CITATION = "GAN Dissection (Bau et al. 2019) IoU ranking, churchoutdoor layer4"

RANKINGS: dict[str, tuple[int, ...]] = {
    "tree": (119, 125, 157, 195, 365, 374, 418, 426, 408, 3, 343, 322, 445, 490, 361),
    "grass": (14, 125, 153, 365, 380, 503, 349, 450, 418, 387, 209, 511, 171, 263, 159),
    "door": (279, 300, 443, 418, 288, 426, 236, 408, 334, 106, 189, 250, 462, 77, 84),
    "sky": (257, 302, 375, 181, 507, 395, 437, 205, 337, 360, 438, 168, 198, 238, 425),
    "cloud": (257, 440, 205, 163, 181, 395, 302, 246, 168, 219, 438, 285, 238, 132, 198),
    "brick": (204, 237, 34, 478, 145, 265, 362, 474, 106, 92, 203, 41, 417, 281, 468),
    "dome": (43, 419, 86, 370, 233, 282, 70, 226, 78, 482, 402, 396, 363, 501, 430),
}


def published_concepts() -> list[Concept]:
    """The seven concepts, ranked as published, without unit 418, values to be filled in."""
    out = []
    for name, ranked in RANKINGS.items():
        excluded = [u for u in ranked if u in EXCLUDED_UNITS]
        out.append(
            Concept(
                name=name,
                model=MODEL_ID,
                layer=LAYER,
                units=[u for u in ranked if u not in EXCLUDED_UNITS],
                values=None,
                source="published",
                created=CREATED,
                description=CITATION
                + (
                    f"; unit {', '.join(map(str, excluded))} left out (grows objects)"
                    if excluded
                    else ""
                ),
                excluded=excluded,
            )
        )
    return out
