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
import math
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .adapt import (
    DEFAULT_STEPS,
    AdaptConfig,
    AdaptResult,
    Fit,
    adapt,
    keep_mask,
    make_perturbation,
    run_gprime,
)
from .composite import CompositeConfig, Layers, composite, replaced_share
from .edit import edit_representation
from .fast import QUALITIES, FastConfig, base_fit, fast_adapt
from .generators.base import LayeredGenerator
from .invert import Encoder, Inversion, InvertConfig, default_config, invert
from .metrics import photo_metrics
from .photo import Box, check_photo, crop_scaled, region_to_model, selection_box, whole_box
from .progress import CancelFn, ProgressFn
from .resolve import EditSpec, unit_values


@dataclass
class PipelineConfig:
    invert: InvertConfig = field(default_factory=InvertConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    context: float = 0.5  # margin around the selection on each side, × its larger side
    composite: CompositeConfig = field(default_factory=CompositeConfig)  # step 4 (feathers)
    quantile_samples: int = 256  # samples for the units' 0.99-quantile "on" values
    quality: str = "faithful"  # "faithful" (the method) | "fast" (core/fast.py)
    fast: FastConfig = field(default_factory=FastConfig)  # used when quality == "fast"
    # Stop before the G′ fit (WouldReplace) when the edit would draw anew more than this
    # share of a selection enlarged ≥ SOFT_SCALE× from the generator's resolution (new
    # content is drawn at R and looks soft there); None: never ask.
    confirm_replaced: float | None = None


SOFT_SCALE = 4.0  # crop side ÷ generator resolution from which new content looks soft


class WouldReplace(ValueError):
    """The edit would draw most of a large selection anew (PipelineConfig.confirm_replaced):
    nothing was fitted yet; the caller asks the user and runs it again without the check."""

    def __init__(self, share: float, scale: float):
        self.share, self.scale = share, scale
        super().__init__(
            f"this edit would draw {share:.0%} of the selection anew at the model's "
            f"resolution, enlarged {scale:.0f}× here: that part will look soft at 100 %; "
            "colour changes keep the photo's detail"
        )


def fit_settings(
    quality: str = "faithful",
    steps: int = DEFAULT_STEPS,
    encoder: Encoder | None = None,
    invert_steps: int | None = None,
    precision: str = "auto",
    seed: int = 0,
    variant: str = "network",
) -> PipelineConfig:
    """The settings an edit runs with, as the CLI's flags and a server request name them:
    the inversion from the model's encoder start when it has one, else random starts
    (invert.default_config, ``invert_steps`` its cap), and ``steps`` G′ steps, which also
    cap every fit of the fast path (``_fast_edit``, fast.base_fit)."""
    cfg = PipelineConfig(
        invert=default_config(encoder, invert_steps, seed, precision, quality),
        adapt=AdaptConfig(steps=steps, variant=variant, seed=seed),
        quality=quality,
    )
    _check_quality(cfg)
    return cfg


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


class GuardedCache(MutableMapping):
    """A session cache as one call sees it. It remembers the sessions the call read (and
    their fits) and the ones it added, so that ``rollback`` leaves the cache exactly as it
    was, e.g. after a result that is not finite: a poisoned fit must never warm-start
    anyone's next edit."""

    def __init__(self, cache: MutableMapping):
        self.cache = cache
        self._before: dict[str, tuple[FitSession, Fit | None, Fit | None]] = {}
        self._added: set[str] = set()

    def __getitem__(self, key: str) -> FitSession:
        session = self.cache[key]
        if key not in self._before and key not in self._added:
            self._before[key] = (session, session.fit, session.base)
        return session

    def __setitem__(self, key: str, session: FitSession) -> None:
        if key not in self._before:
            self._added.add(key)
        self.cache[key] = session

    def __delitem__(self, key: str) -> None:
        del self.cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache)

    def __len__(self) -> int:
        return len(self.cache)

    def rollback(self) -> None:
        for key in self._added:
            self.cache.pop(key, None)
        for session, fit, base in self._before.values():
            session.fit, session.base = fit, base


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
    # Photo-resolution numbers (metrics.photo_metrics): psnr_inside, psnr_kept, detail_ratio,
    # detail_ratio_kept, edge_gradient_ratio, replaced_fraction; empty for reconstruct.
    metrics: dict = field(default_factory=dict)

    def is_finite(self) -> bool:
        """Whether the fit's loss and the generated image are finite numbers (a diverged
        fit is neither)."""
        return math.isfinite(self.psnr_keep) and bool(torch.isfinite(self.generated).all())


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

    Values: edit.values, else ``on_values`` ([C], the edit layer's, when the caller has them),
    else the model's on-values (resolve.unit_values: published where the reference ships
    them, else sampled and cached).
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
    given = None if edit.values is None else torch.tensor(list(edit.values))
    values = unit_values(gen, layer, edit.units, edit.op, cfg.quantile_samples, on_values, given)
    r_e, present = edit_representation(
        inv.r, gen.layer_mask(prep.mask, layer), list(edit.units), edit.op, values, edit.presence
    )
    keep = keep_mask(prep.mask, gen.resolution)
    _confirm_replaced(gen, prep, r_e, keep, cfg)
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


def _confirm_replaced(
    gen: LayeredGenerator,
    prep: Prepared,
    r_e: torch.Tensor,
    keep: torch.Tensor,
    cfg: PipelineConfig,
) -> None:
    """Raise WouldReplace when cfg asks and the edit would draw most of a large selection
    anew. Estimated with G itself (G′ is not fitted yet: two forward passes and the colour
    transform's fit at R, milliseconds on the default model): G′ changes the rendering
    outside the edit, not which of its changes are new content."""
    if cfg.confirm_replaced is None:
        return
    scale = prep.box.size / gen.resolution
    if scale < SOFT_SCALE:
        return
    start = gen.edit_index + 1
    with torch.no_grad():
        edited, unedited = gen.run(r_e, start), gen.run(prep.session.inversion.r, start)
    layers = Layers(prep.x, edited, unedited, 1 - keep)
    share = replaced_share(layers, prep.mask, cfg.composite)
    if share > cfg.confirm_replaced:
        raise WouldReplace(share, scale)


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
