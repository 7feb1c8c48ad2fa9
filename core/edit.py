"""Step 2: edit the representation at the edit layer inside the user's mask.

A concept is a set of units U at layer k and an "on" value per unit. The mask is brought to
the layer's resolution as the GANPaint demo does: every cell the selection touches is
switched fully (a hard 1, see ``edit_mask``), a(u, y, x) = m(y, x) for u ∈ U and
r_e = (1 − a)·r + a·v; v = the on value (add) or 0 (remove). A soft selection's softness
acts only in the photo composite (pipeline/photo), not here.

A concept may carry a ``Presence`` probe (learned from examples with and without it): a
direction d over all the layer's units and a level t that cells *without* the concept stay
under. ``remove_where_present`` then switches the concept's units off only in the selected
cells where ⟨r, d⟩ > t, and only as far as needed to bring ⟨r, d⟩ down to t. Why: the
default model's units are not detectors. Set to 0 everywhere, "open mouth" also changes
closed mouths and "blond hair" darkens any hair or leaves (measured in
docs/performance.md), so a remove of something the photo does not show would repaint it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .generators.base import LayeredGenerator

STRENGTHS = {"low": 4, "med": 10, "high": 15}  # GANPaint's brush sizes: top-ranked units
# The GANPaint demo's default brush is its largest. A concept may name its own default
# (Concept.default_strength); this one applies when neither the request nor the concept does.
DEFAULT_STRENGTH = "high"
# A layer cell is "touched" when some pixel of it is selected above this level. 0.01 lies
# just above 2/255, so the faintest levels of an 8-bit selection (anti-aliasing dust, the
# far tail of a feather, area-resize slivers under 1 % of a pixel) switch nothing, while
# any selection a person can see in GIMP (3/255 and up) switches its cells.
TOUCH_THRESHOLD = 0.01


def pool_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] -> [B, 1, size, size] by adaptive max-pooling (soft values)."""
    return F.adaptive_max_pool2d(mask, size)


def edit_mask(mask: torch.Tensor, size: int, threshold: float = TOUCH_THRESHOLD) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] -> [B, 1, size, size] of 0/1: a cell is 1 when any of its
    pixels is above ``threshold`` (GANPaint's client switches every touched cell fully)."""
    return (pool_mask(mask, size) > threshold).to(mask.dtype)


def apply_edit(
    r: torch.Tensor, mask: torch.Tensor, units: Sequence[int], values: torch.Tensor
) -> torch.Tensor:
    """r_e = (1 − a)·r + a·v on the given units, a = edit_mask(mask) (0 or 1 per cell).

    r: [B, C, h, w]; mask: [B, 1, H, W] (any resolution, pooled to h×w);
    units: indices into C; values: [len(units)] target values (zeros to remove).
    """
    if len(units) != values.numel():
        raise ValueError("one value per unit")
    C = r.shape[1]
    bad = [u for u in units if not 0 <= u < C]
    if bad:
        raise IndexError(f"unit index out of range 0..{C - 1}: {bad}")
    m = edit_mask(mask, r.shape[-1]).to(r)
    idx = torch.as_tensor(list(units), dtype=torch.long, device=r.device)
    a = torch.zeros_like(r)
    a[:, idx] = m.expand(-1, len(idx), -1, -1)
    v = torch.zeros_like(r)
    v[:, idx] = values.to(r).view(1, -1, 1, 1).expand(r.shape[0], -1, *r.shape[-2:])
    return (1 - a) * r + a * v


@dataclass(frozen=True)
class Presence:
    """Where a concept is present at its layer: cells with ⟨r, direction⟩ > threshold.

    direction: [C] floats of norm 1, the positives' minus the negatives' mean activation in
    the concept's region; threshold: the ``quantile`` of ⟨r, direction⟩ over the negatives'
    cells in that region (so that share of "absent" cells lies at or under it), raised,
    when ``background_quantile`` is set, to that quantile over the cells of real photos
    without the concept (concepts/background.py says why).
    """

    direction: tuple[float, ...]
    threshold: float
    quantile: float = 0.9
    background_quantile: float | None = None


def _direction(r: torch.Tensor, presence: Presence) -> torch.Tensor:
    d = torch.as_tensor(presence.direction, dtype=r.dtype, device=r.device)
    if d.numel() != r.shape[1]:
        raise ValueError(f"presence direction has {d.numel()} units, the layer {r.shape[1]}")
    return d


def presence_map(r: torch.Tensor, presence: Presence) -> torch.Tensor:
    """⟨r, direction⟩ per cell: r [B, C, h, w] -> [B, 1, h, w]."""
    return torch.einsum("bchw,c->bhw", r, _direction(r, presence))[:, None]


def remove_where_present(
    r: torch.Tensor, mask: torch.Tensor, units: Sequence[int], presence: Presence
) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch the units off where the concept is present: (r_e, g).

    r: [B, C, h, w]; mask: [B, 1, H, W] (pooled as ``edit_mask``); units: indices into C.
    Per selected cell with p = ⟨r, d⟩ and p_U = the units' share of it (Σ_{u∈U} r_u·d_u):
    g = clamp((p − t) / p_U, 0, 1) and r_e[U] = (1 − g)·r[U]: the method's remove scaled
    to what lies above the absent level t (g = 1 where the units' share is all of the
    excess or more, or when p_U ≤ 0 while p > t). No other unit changes, no unit rises
    (r·(1 − g) keeps the sign), and a cell with p ≤ t is left bit for bit.
    g: [B, 1, h, w] in [0, 1], how far each cell's units were switched off.
    """
    return _remove_in_cells(r, edit_mask(mask, r.shape[-1]).to(r), units, presence)


def _remove_in_cells(
    r: torch.Tensor, cells: torch.Tensor, units: Sequence[int], presence: Presence
) -> tuple[torch.Tensor, torch.Tensor]:
    """remove_where_present with the selected cells given: [B, 1, h, w] of 0/1."""
    bad = [u for u in units if not 0 <= u < r.shape[1]]
    if bad:
        raise IndexError(f"unit index out of range 0..{r.shape[1] - 1}: {bad}")
    idx = torch.as_tensor(list(units), dtype=torch.long, device=r.device)
    d = _direction(r, presence)
    p = torch.einsum("bchw,c->bhw", r, d)[:, None]
    p_u = torch.einsum("bchw,c->bhw", r[:, idx], d[idx])[:, None]
    excess = (p - presence.threshold).clamp_min(0)
    g = torch.where(p_u > 0, excess / p_u.clamp_min(1e-12), (excess > 0).to(r))
    g = cells * g.clamp(0, 1)
    out = r.clone()
    out[:, idx] = r[:, idx] * (1 - g)  # × 1 exactly where g = 0
    return out, g


def edit_representation(
    r: torch.Tensor,
    mask: torch.Tensor,
    units: Sequence[int],
    op: str,
    values: torch.Tensor,
    presence: Presence | None = None,
) -> tuple[torch.Tensor, float | None]:
    """Step 2 as every caller makes it: (r_e, present_fraction).

    r: [B, C, h, w]; mask: [B, 1, H, W]; values: [len(units)] (zeros for a remove). A remove
    with a ``presence`` probe acts only where the concept is (``remove_where_present``) and
    reports the share of selected cells where it switched anything off; any other edit is
    ``apply_edit`` and reports None.
    """
    if op == "remove" and presence is not None:
        cells = edit_mask(mask, r.shape[-1]).to(r)
        r_e, g = _remove_in_cells(r, cells, units, presence)
        return r_e, float((g > 0).to(g).sum() / cells.sum().clamp_min(1))
    return apply_edit(r, mask, units, values), None


@torch.no_grad()
def unit_quantiles(
    gen: LayeredGenerator,
    layer: str | int,
    n_samples: int = 256,
    q: float = 0.99,
    seed: int = 0,
    batch: int = 16,
) -> torch.Tensor:
    """Each unit's q-quantile activation over random samples and positions: [C].

    This is the "on" value a unit is set to when a concept is added.
    """
    k = gen.index(layer)
    rng = torch.Generator().manual_seed(seed)
    acts = []
    for start in range(0, n_samples, batch):
        z = gen.sample_latent(min(batch, n_samples - start), rng)
        a = gen.run(z, 0, k + 1)  # [b, C, h, w]
        acts.append(a.transpose(0, 1).reshape(a.shape[1], -1).float().cpu())
    flat = torch.cat(acts, dim=1)
    # kthvalue, not torch.quantile: quantile refuses inputs over 2^24 elements.
    return flat.kthvalue(max(1, round(q * flat.shape[1])), dim=1).values


def edit_values(units: Sequence[int], op: str, on_values: torch.Tensor) -> torch.Tensor:
    """Target values for an add/remove edit: [len(units)]."""
    if op == "remove":
        return torch.zeros(len(units))
    if op == "add":
        return on_values[list(units)].float()
    raise ValueError(f"op must be add or remove, not {op!r}")
