"""The method end to end on a real photo: crop → invert → edit → adapt G′ → composite.

A photo is [H, W, 3|4] uint8/uint16, a mask [H, W] uint8 (see photo.py). Steps 1–3 work on
a square around the selection at the generator's resolution; step 4 (composite.py) brings
only the edit's change back at the photo's resolution, and only pixels inside the selection
change.

``cache`` is any mutable mapping (the server passes an LRU bounded by memory); it keeps one
FitSession per model + crop content, so a second edit of the same region skips inversion and
warm-starts G′ from the previous fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .adapt import (
    AdaptConfig,
    AdaptResult,
    Fit,
    adapt,
    keep_mask,
    make_perturbation,
    run_gprime,
)
from .composite import CompositeConfig, Layers, composite
from .edit import Presence, edit_representation, edit_values, unit_quantiles
from .fast import QUALITIES, FastConfig, base_fit, fast_adapt
from .generators.base import LayeredGenerator
from .invert import Encoder, Inversion, InvertConfig, invert
from .metrics import photo_metrics
from .photo import Box, check_photo, crop_scaled, region_to_model, selection_box, whole_box
from .progress import CancelFn, ProgressFn


@dataclass
class PipelineConfig:
    invert: InvertConfig = field(default_factory=InvertConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    context: float = 0.5  # margin around the selection on each side, × its larger side
    composite: CompositeConfig = field(default_factory=CompositeConfig)  # step 4 (feathers)
    quantile_samples: int = 256  # samples for the units' 0.99-quantile "on" values
    quality: str = "faithful"  # "faithful" (the method, 1000 steps) | "fast" (core/fast.py)
    fast: FastConfig = field(default_factory=FastConfig)  # used when quality == "fast"


@dataclass
class EditSpec:
    units: Sequence[int]
    op: str  # "add" | "remove"
    values: Sequence[float] | None = None  # per-unit "on" values; None = 0.99 quantiles
    layer: str | int | None = None  # None = the generator's edit layer
    # With a remove: switch the units off only where the concept is (edit.py); None = in
    # every selected cell, as the published method does.
    presence: Presence | None = None


@dataclass
class FitSession:
    """What is worth keeping between edits of one photo region."""

    key: str
    inversion: Inversion
    fit: Fit | None = None  # the latest G′ fit, to warm-start the next
    base: Fit | None = None  # a fit of the unedited region (keep = 1, by reconstruct)

    def nbytes(self) -> int:
        fits = [f for f in (self.fit, self.base) if f is not None]
        if len(fits) == 2 and fits[0] is fits[1]:
            fits = fits[:1]
        return self.inversion.nbytes() + sum(f.nbytes() for f in fits)


@dataclass
class Prepared:
    x: torch.Tensor  # [1, 3, R, R] target in [-1, 1]
    mask: torch.Tensor  # [1, 1, R, R] selection in [0, 1]
    box: Box
    session: FitSession
    reused: bool


@dataclass
class PhotoResult:
    image: np.ndarray  # same shape and dtype as the photo
    generated: torch.Tensor  # [1, 3, R, R] the composite at generator resolution
    target: torch.Tensor  # [1, 3, R, R] the photo crop at generator resolution
    psnr_keep: float
    psnr_inversion: float
    seconds: float
    steps: int
    session_reused: bool
    box: Box
    extra: dict = field(default_factory=dict)
    # Photo-resolution numbers (metrics.photo_metrics): psnr_inside, psnr_kept, detail_ratio,
    # detail_ratio_kept, edge_gradient_ratio, replaced_fraction; empty for reconstruct.
    metrics: dict = field(default_factory=dict)


def _device(gen: LayeredGenerator) -> torch.device:
    return next(gen.parameters()).device


def session_key(gen: LayeredGenerator, x: torch.Tensor) -> str:
    """Model + exact content the inversion sees: same crop, same key."""
    h = hashlib.sha256(gen.model_id.encode())
    h.update(x.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:32]


def prepare(
    gen: LayeredGenerator,
    photo: np.ndarray,
    mask: np.ndarray | None,
    cfg: PipelineConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    cache: MutableMapping | None = None,
    encoder: Encoder | None = None,
) -> Prepared:
    """Crop around the selection (or take the whole frame when mask is None) and invert it.

    The inversion ignores nothing: the edit decides later what changes, and the same
    inversion serves every edit of the region.
    """
    cfg = cfg or PipelineConfig()
    check_photo(photo, mask)
    dev, res = _device(gen), gen.resolution
    h, w = photo.shape[:2]
    box = whole_box(h, w) if mask is None else selection_box(mask, cfg.context, min_size=res)
    x = region_to_model(photo, box, res, dev)
    # = mask_to_model(crop(mask, box)), without the crop at full size
    m = (
        torch.zeros(1, 1, res, res, device=dev)
        if mask is None
        else crop_scaled(mask, box, res).clamp(0, 1).to(dev)
    )
    key = session_key(gen, x)
    session = cache.get(key) if cache is not None else None
    reused = session is not None
    if session is None:
        inv = invert(gen, x, cfg.invert, encoder=encoder, progress=progress, cancel=cancel)
        session = FitSession(key, inv)
        if cache is not None:
            cache[key] = session
    elif session.inversion.budget < cfg.invert.total_steps:
        # A faithful edit of a region inverted within the fast path's budget (e.g. while
        # the plug-in's dialog was open): the inversion goes on from where it stopped.
        session.inversion = invert(
            gen, x, cfg.invert, progress=progress, cancel=cancel, start=session.inversion
        )
    return Prepared(x, m, box, session, reused)


def reconstruct_photo(
    gen: LayeredGenerator,
    photo: np.ndarray,
    cfg: PipelineConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    cache: MutableMapping | None = None,
) -> PhotoResult:
    """Fit G′ to the whole frame (keep = 1 everywhere) and render it at the photo's size.

    This tests the fit: psnr_keep is the faithful reconstruction's PSNR, psnr_inversion that
    of G alone.
    """
    cfg = cfg or PipelineConfig()
    _check_quality(cfg)
    t0 = time.perf_counter()
    prep = prepare(gen, photo, None, cfg, progress, cancel, cache)
    gen = gen.bind(prep.session.inversion.z)
    inv = prep.session.inversion
    keep = torch.ones_like(prep.mask)
    z_h = _to_split(gen, inv.r, cfg.adapt)
    if cfg.quality == "fast":
        res = base_fit(gen, z_h, prep.x, cfg.adapt, cfg.fast, progress, cancel)
    else:
        res = _faithful_fit(gen, prep, z_h, keep, cfg, progress, cancel)
    prep.session.fit = res.fit
    prep.session.base = res.fit  # a fit of the unedited region: what fast edits start from
    # At the photo's resolution: the photo plus G′'s error in the generator's band. Above
    # that band G′ has nothing to say (it renders R px), so the photo's own detail stays.
    free = torch.ones_like(keep)
    comp = composite(
        photo, None, prep.box, Layers(prep.x, res.image, prep.x, free), cfg.composite, False
    )
    return _photo_result(comp.image, res.image, prep, res, t0)


def edit_photo(
    gen: LayeredGenerator,
    photo: np.ndarray,
    mask: np.ndarray,
    edit: EditSpec,
    cfg: PipelineConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    cache: MutableMapping | None = None,
    on_values: torch.Tensor | None = None,
) -> PhotoResult:
    """Switch a concept's units on (add) or off (remove) inside the selection.

    on_values: [C] per-unit "on" values of the edit layer, when the caller has them cached;
    otherwise edit.values or the 0.99 quantiles over random samples are used.
    """
    cfg = cfg or PipelineConfig()
    _check_quality(cfg)
    t0 = time.perf_counter()
    prep = prepare(gen, photo, mask, cfg, progress, cancel, cache)
    inv = prep.session.inversion
    gen = gen.bind(inv.z)  # G_F and G′ run with the inversion's styles fixed (StyleGAN)
    layer = gen.edit_index if edit.layer is None else gen.index(edit.layer)
    if layer != inv.layer:
        raise ValueError(
            f"edits at layer {layer} need an inversion at that layer (have {inv.layer})"
        )
    n_units = gen.infos[layer].channels
    bad = [u for u in edit.units if not 0 <= int(u) < n_units]
    if bad or not edit.units:
        raise ValueError(f"unit indices must be in 0..{n_units - 1}: got {list(edit.units)}")
    if edit.values is not None:
        if len(edit.values) != len(edit.units):
            raise ValueError("one value per unit")
        values = (
            torch.tensor(list(edit.values)) if edit.op == "add" else torch.zeros(len(edit.units))
        )
    else:
        if on_values is None and edit.op == "add":
            on_values = unit_quantiles(gen, layer, cfg.quantile_samples)
        values = edit_values(
            edit.units, edit.op, on_values if on_values is not None else torch.zeros(0)
        )
    r_e, present = edit_representation(
        inv.r, gen.layer_mask(prep.mask, layer), list(edit.units), edit.op, values, edit.presence
    )
    keep = keep_mask(prep.mask, gen.resolution)
    z_h = _to_split(gen, r_e, cfg.adapt)
    if cfg.quality == "fast":
        res = _fast_edit(gen, prep, z_h, keep, cfg, progress, cancel)
    else:
        res = _faithful_fit(gen, prep, z_h, keep, cfg, progress, cancel)
    prep.session.fit = res.fit
    # Step 4 (composite.py): only the edit's change, measured against the same fit on the
    # unedited representation (one more forward pass), goes into the photo.
    with torch.no_grad():
        unedited = run_gprime(gen, _to_split(gen, inv.r, cfg.adapt), res.fit.perturbation())
    layers = Layers(prep.x, res.image, unedited, 1 - keep)
    comp = composite(photo, mask, prep.box, layers, cfg.composite)
    generated = res.image * (1 - keep) + prep.x * keep  # the method's step 4 at R
    result = _photo_result(comp.image, generated, prep, res, t0)
    result.metrics = photo_metrics(photo, comp.image, mask, comp.replaced, comp.window)
    if present is not None:
        result.metrics["present_fraction"] = present
    return result


def _photo_result(
    image: np.ndarray, generated: torch.Tensor, prep: Prepared, res: AdaptResult, t0: float
) -> PhotoResult:
    return PhotoResult(
        image,
        generated,
        prep.x,
        res.psnr_keep,
        prep.session.inversion.psnr,
        time.perf_counter() - t0,
        res.steps,
        prep.reused,
        prep.box,
    )


def _faithful_fit(
    gen: LayeredGenerator,
    prep: Prepared,
    z_h: torch.Tensor,
    keep: torch.Tensor,
    cfg: PipelineConfig,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> AdaptResult:
    """The method's G′ fit, warm from the session's last fit when it is of the same kind."""
    init = _warm_start(gen, prep.session, cfg.adapt)
    return adapt(gen, z_h, prep.x, keep, cfg.adapt, init=init, progress=progress, cancel=cancel)


def _check_quality(cfg: PipelineConfig) -> None:
    if cfg.quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, not {cfg.quality!r}")


def _fast_edit(
    gen: LayeredGenerator,
    prep: Prepared,
    z_h: torch.Tensor,
    keep: torch.Tensor,
    cfg: PipelineConfig,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> AdaptResult:
    """The fast path, from a fit of the session that may serve as its base
    (``_fast_start``: any kind, R or direct δ). Without one (a region's first edit, or a
    one-off) it fits cold: full frame, keep-masked, early-stopped. That one fit is cheaper
    than a base fit of the unedited region followed by the edit's fit (docs/performance.md),
    and it is the base of the region's next edits of the same selection.
    cfg.adapt.steps caps every fit."""
    start = _fast_start(prep.session, keep)
    if start is None:
        return base_fit(gen, z_h, prep.x, cfg.adapt, cfg.fast, progress, cancel, keep)
    fcfg = dataclasses.replace(cfg.fast, max_steps=min(cfg.fast.max_steps, cfg.adapt.steps))
    return fast_adapt(gen, z_h, prep.x, keep, cfg.adapt, fcfg, start, None, progress, cancel)


def _fast_start(session: FitSession, keep: torch.Tensor) -> Fit | None:
    """A fit the fast path may start from: the region's base fit (the unedited region,
    made by reconstruct), else its last fit if that one pinned every pixel this edit pins
    (its free zone lies inside this edit's, as on a re-edit of the same selection): outside
    the new free zone such a fit already reproduces the photo, and inside it
    ``fast.start_deltas`` resets δ anyway."""
    if session.base is not None:
        return session.base
    fit = session.fit
    if fit is not None and fit.keep is not None and bool((fit.keep >= keep - 1e-4).all()):
        return fit
    return None


def _warm_start(gen: LayeredGenerator, session: FitSession, cfg: AdaptConfig) -> Fit | None:
    """The session's last fit, if it is of the kind this config asks for."""
    fit = session.fit
    if fit is None:
        return None
    want = make_perturbation(gen, cfg)
    have = fit.perturbation
    same = type(have) is type(want) and have.shapes == want.shapes
    return fit if same else None


def _to_split(gen: LayeredGenerator, r: torch.Tensor, cfg: AdaptConfig) -> torch.Tensor:
    """Run G_H from the edit layer's output to the split: z_h [1, C_h, H, W]."""
    h = gen.default_split() if cfg.split is None else cfg.split
    with torch.no_grad():
        return gen.run(r, gen.edit_index + 1, h)
