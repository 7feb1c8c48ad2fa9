"""The published GAN Dissection rankings for ProGAN churchoutdoor, layer4 (512 units, 8×8).

Unit indices are facts from the GANPaint demo (CSAILVision/gandissect, GAN Dissection, Bau et
al., ICLR 2019): tree, grass and door are ranked by causal effect (ACE, the average causal
effect of switching units on/off on the segmented class), sky, cloud, brick and dome by IoU
of the unit's thresholded activation with the class. The demo's client takes the top N of
each list as it stands, unit 418 included, and so do we. Leaving 418 out (its 0.99 quantile
is 76 against 3–16 for every other unit) is an option of ours, not the reference's
(``Concept.top(leave_out=...)``, ``ganpaint edit --leave-out 418``, the protocol's
``leave_out``). The "on" values are the demo's published 0.99 quantiles of every layer4
unit (quantiles.py, ``data/on_values/progan-churchoutdoor-layer4.json``).

``scripts/make_starter_concepts.py`` writes ``data/progan-churchoutdoor.json`` from here.
"""

from __future__ import annotations

from .record import Concept

MODEL_ID = "progan-churchoutdoor"
LAYER = "layer4"
# Our option, not the reference's: the unit a user may leave out of churchoutdoor edits.
SUGGESTED_LEAVE_OUT = (418,)
# Fixed so that regenerating the data file gives the same bytes.
CREATED = "2019-01-01T00:00:00Z"
RANKED_BY = {
    "tree": "ACE",
    "grass": "ACE",
    "door": "ACE",
    "sky": "IoU",
    "cloud": "IoU",
    "brick": "IoU",
    "dome": "IoU",
}
_HOW = {"ACE": "causal-effect (ACE) ranking", "IoU": "IoU ranking"}

RANKINGS: dict[str, tuple[int, ...]] = {
    "tree": (119, 125, 157, 195, 365, 374, 418, 426, 408, 3, 343, 322, 445, 490, 361),
    "grass": (14, 125, 153, 365, 380, 503, 349, 450, 418, 387, 209, 511, 171, 263, 159),
    "door": (279, 300, 443, 418, 288, 426, 236, 408, 334, 106, 189, 250, 462, 77, 84),
    "sky": (257, 302, 375, 181, 507, 395, 437, 205, 337, 360, 438, 168, 198, 238, 425),
    "cloud": (257, 440, 205, 163, 181, 395, 302, 246, 168, 219, 438, 285, 238, 132, 198),
    "brick": (204, 237, 34, 478, 145, 265, 362, 474, 106, 92, 203, 41, 417, 281, 468),
    "dome": (43, 419, 86, 370, 233, 282, 70, 226, 78, 482, 402, 396, 363, 501, 430),
}


def describe(name: str) -> str:
    text = f"GAN Dissection (Bau et al. 2019) {_HOW[RANKED_BY[name]]} of the GANPaint demo"
    text += ", churchoutdoor layer4"
    ranked = RANKINGS[name]
    if any(u in ranked for u in SUGGESTED_LEAVE_OUT):
        text += (
            "; includes unit 418 as the demo does (leaving it out is our option: --leave-out 418)"
        )
    return text


def published_concepts() -> list[Concept]:
    """The seven concepts, ranked as published (unit 418 included), values from the
    published table at use time."""
    return [
        Concept(
            name=name,
            model=MODEL_ID,
            layer=LAYER,
            units=list(ranked),
            values=None,
            source="published",
            created=CREATED,
            description=describe(name),
        )
        for name, ranked in RANKINGS.items()
    ]
