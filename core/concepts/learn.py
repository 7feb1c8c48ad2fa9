"""Learn a concept from one example: the units that fire inside the user's selection.

The photographer selects a region that shows the thing (say, hair). The photo is cropped
around the selection and inverted (``pipeline.prepare``); at the edit layer, units are
ranked by ``rank.selection_scores`` — mean activation inside minus outside, in units of each
unit's "on" level (its 0.99 quantile over random samples; the docstring there says why
this statistic) — and the top 15 with a positive score are kept, each with its typical
(mask-weighted mean) activation inside the selection as the value the brush paints.

``concept_from_examples`` learns from several examples at once (GAN samples that show the
thing and samples that do not, one region for all): how the built-in concepts of the
default model were made (scripts/make_starter_concepts.py).
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np
import torch

from ..edit import Presence
from ..progress import CancelFn, ProgressFn
from .background import BACKGROUND_QUANTILE, calibrate
from .quantiles import on_values as cached_on_values
from .rank import contrast_scores, presence_probe, ranked, selection_scores
from .record import Concept, ConceptError, check_name, now_iso

TOP_UNITS = 15  # GANPaint's largest brush
# The share of cells without the concept that a remove leaves alone. 0.9: on the default
# model's GAN samples, held out, "open mouth" keeps 0.69 of the method's removal where a
# mouth is open and 87 % of faces without one stay within 35 dB (41 % with the method's
# remove); docs/performance.md, "A remove acts only where the concept is".
PRESENCE_QUANTILE = 0.9


def concept_from_activations(
    acts: torch.Tensor,
    mask: torch.Tensor,
    name: str,
    model_id: str,
    layer: str,
    scale: torch.Tensor | None,
    k: int = TOP_UNITS,
    description: str = "",
) -> Concept:
    """The learned concept from activations [B, C, h, w] and the selection [B, 1, H, W]."""
    check_name(name)
    try:
        scores, inside = selection_scores(acts, mask, scale)
    except ValueError as e:
        raise ConceptError(f"cannot learn {name!r}: {e}") from None
    units = ranked(scores, k)
    if not units:
        raise ConceptError(
            f"cannot learn {name!r}: no unit fires more inside the selection than outside"
        )
    return Concept(
        name=name,
        model=model_id,
        layer=layer,
        units=units,
        values=[float(inside[u]) for u in units],
        source="learned",
        created=now_iso(),
        description=description,
        scores=[float(scores[u]) for u in units],
    )


def concept_from_examples(
    acts: torch.Tensor,
    mask: torch.Tensor,
    positive: torch.Tensor,
    name: str,
    model_id: str,
    layer: str,
    scale: torch.Tensor,
    k: int = TOP_UNITS,
    gain: float = 1.0,
    description: str = "",
    presence_quantile: float = PRESENCE_QUANTILE,
    background: torch.Tensor | None = None,
    background_quantile: float = BACKGROUND_QUANTILE,
) -> Concept:
    """The concept shown in a region by the positive examples and not by the others.

    acts: [B, C, h, w]; mask: [1 or B, 1, H, W]; positive: [B] bool; scale: [C] on levels.
    Units are ranked by ``rank.contrast_scores``; each paints ``gain`` × its mean
    activation in the region on the positives (the mean is what a typical example shows;
    the gain makes up for the edit switching only k of the layer's units). The same
    examples give the concept's ``Presence`` probe (``rank.presence_probe``), so that a
    remove leaves alone what looks like the negatives. background: [N, C, h, w], the layer's
    representation of real photos without the thing (``background.invert_windows``); when
    given, the probe's level is raised to their ``background_quantile`` (``calibrate``).
    """
    check_name(name)
    if not gain > 0:
        raise ConceptError(f"cannot learn {name!r}: gain must be > 0, not {gain}")
    try:
        scores, inside = contrast_scores(acts, mask, positive, scale)
    except ValueError as e:
        raise ConceptError(f"cannot learn {name!r}: {e}") from None
    units = ranked(scores, k)
    if not units:
        raise ConceptError(f"cannot learn {name!r}: no unit fires more on the examples")
    try:
        direction, threshold = presence_probe(acts, mask, positive, presence_quantile)
        presence = Presence(tuple(direction.tolist()), threshold, presence_quantile)
        if background is not None:
            presence = calibrate(presence, background, background_quantile)
    except ValueError as e:
        raise ConceptError(f"cannot learn {name!r}: {e}") from None
    return Concept(
        name=name,
        model=model_id,
        layer=layer,
        units=units,
        values=[float(gain * inside[u]) for u in units],
        source="learned",
        created=now_iso(),
        description=description,
        scores=[float(scores[u]) for u in units],
        presence=presence,
    )


def learn_concept(
    gen,
    photo: np.ndarray,
    mask: np.ndarray,
    name: str,
    cfg=None,
    k: int = TOP_UNITS,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    cache: MutableMapping | None = None,
    scale: torch.Tensor | None = None,
) -> Concept:
    """Invert the region around the selection and learn the concept it shows.

    photo: [H, W, C] uint8/uint16; mask: [H, W] uint8 (255 = the example). cfg: a
    PipelineConfig (its inversion settings are used). scale: [C] "on" levels; default the
    generator's cached 0.99 quantiles. Nothing is saved: add the result to a library.
    """
    from ..pipeline import prepare  # local: pipeline pulls in the whole method

    check_name(name)
    if mask is None or not np.any(np.asarray(mask) > 0):
        raise ConceptError(f"cannot learn {name!r}: the selection is empty")
    prep = prepare(gen, photo, mask, cfg, progress, cancel, cache)
    inv = prep.session.inversion
    if scale is None:
        scale = cached_on_values(gen, inv.layer)
    return concept_from_activations(
        gen.image_cells(inv.r, inv.layer),  # the selection is in the image's frame
        prep.mask,
        name,
        gen.model_id,
        gen.infos[inv.layer].name,
        scale,
        k,
        description=f"learned from one selection (inversion {inv.psnr:.1f} dB)",
    )
