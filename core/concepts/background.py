"""Where a concept is not: real photos that show none of it, to calibrate presence probes.

A presence probe learned from GAN samples (``rank.presence_probe``) sets its level t on the
samples' own representations. Real photos invert to representations the samples never
show: on the 96 samples the default model's concepts were learned from, the inversion's r
differs from the sampled one by 72 % of its norm while both render the same picture
(45 dB). There the probe fires on things it was never shown: the face model's "blond hair"
on autumn leaves in every selected cell, "open mouth" on a third of them, and a remove by
such a probe repaints the leaves (docs/performance.md, "Presence levels calibrated on real
photos"). So the level is raised to what real photos without the concept reach
(``background_level``): photo windows at several scales, inverted as the pipeline inverts a
selection's region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..edit import Presence, presence_map
from ..encoder import model_encoder
from ..generators.base import LayeredGenerator
from ..invert import InvertConfig, default_config, invert
from ..photo import Box, check_photo, region_to_model

# The share of real cells without the concept that a remove leaves alone: 1 % may still
# switch. The only level tried (docs/performance.md, "Presence levels calibrated on real
# photos").
BACKGROUND_QUANTILE = 0.99
# Window sides as a share of the photo's shorter side: a mouth-sized selection's region on a
# 2560 px photo is about 1/6 of it, a face's 1/3 to 2/3.
SCALES = (1 / 6, 1 / 3, 2 / 3)


def photo_windows(
    height: int, width: int, per_scale: int = 4, scales: Sequence[float] = SCALES, seed: int = 0
) -> list[Box]:
    """``per_scale`` square windows per scale, placed at random inside the photo (seeded)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for s in scales:
        side = max(1, int(min(height, width) * s))
        for _ in range(per_scale):
            y = int(rng.integers(0, height - side + 1))
            x = int(rng.integers(0, width - side + 1))
            boxes.append(Box(x, y, side))
    return boxes


def invert_windows(
    gen: LayeredGenerator,
    photo: np.ndarray,
    boxes: Sequence[Box],
    cfg: InvertConfig | None = None,
) -> torch.Tensor:
    """The edit-layer representation of each window, inverted as ``pipeline.prepare``
    inverts a selection's region: [len(boxes), C, h, w] on the CPU.

    photo: [H, W, C] uint8/uint16 (alpha ignored). cfg: default the one the CLI gives a
    photo (``invert.default_config`` with the model's encoder).
    """
    check_photo(photo)
    dev = next(gen.parameters()).device
    cfg = cfg or default_config(model_encoder(gen))
    out = []
    for box in boxes:
        x = region_to_model(photo, box, gen.resolution, dev)
        out.append(invert(gen, x, cfg).r.detach().float().cpu())
    return torch.cat(out)


def background_level(acts: torch.Tensor, presence: Presence, quantile: float) -> float:
    """The ``quantile`` of ⟨cell, direction⟩ (``edit.presence_map``) over every cell of
    acts [N, C, h, w]."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), not {quantile}")
    return float(torch.quantile(presence_map(acts.float(), presence).flatten().cpu(), quantile))


def calibrate(
    presence: Presence, background: torch.Tensor, quantile: float = BACKGROUND_QUANTILE
) -> Presence:
    """The probe with its level raised to ``background_level`` where that is higher (never
    lowered: the samples' negatives still bound it). background: [N, C, h, w]."""
    level = background_level(background, presence, quantile)
    return replace(presence, threshold=max(presence.threshold, level), background_quantile=quantile)
