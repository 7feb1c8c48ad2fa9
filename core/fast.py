"""The fast G′ fit: same objective, far less work per edit.

What the loss really needs. Far from the edit the photo pins G′ and the image's base fit (a
fit of the unedited image, kept in the session) already reproduces it; only pixels near the
edit must change. So the fast path

1. starts from the base fit's δ_i, reset to 0 (G′ = G, as R starts) where the edit frees the
   generator, so the base fit's memory of the old content cannot ghost into the edit;
2. fine-tunes the δ_i tensors themselves (method.md's direct ablation) instead of R: on
   ProGAN-256 R's convolutions cost ≈ 3× G′_F's own (docs/performance.md);
3. lets δ change only inside a window around the free zone (keep < 1) plus a ring of pinned
   pixels, and computes G′_F only on that window plus its receptive-field margin
   (``region.plan``), skipping everything outside; the first G′_F layer's output before its
   δ is constant during a fit, so it is computed once;
4. stops when psnr_keep on the window stops improving, then renders G′ on the full frame.

The result is an exact member of the method's family: δ_i = the base δ_i outside the
window, the fine-tuned δ_i inside (``PatchedPerturbation``). Its loss restricted to the
window is the faithful loss minus a constant, so the gradients are the faithful ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import region
from .adapt import (
    AdaptConfig,
    AdaptResult,
    DirectPerturbation,
    Fit,
    Perturbation,
    make_adam,
    run_gprime,
)
from .generators.base import LayeredGenerator
from .metrics import psnr
from .progress import CancelFn, ProgressFn, Reporter

QUALITIES = ("faithful", "fast")


@dataclass
class FastConfig:
    max_steps: int = 300  # cap; early stopping usually ends sooner
    check_every: int = 10  # psnr_keep is measured every this many steps (costs a sync)
    patience: int = 20  # stop after this many steps without min_gain dB of improvement
    min_gain: float = 0.05  # dB
    ring: int = 16  # pinned px around the free zone, at 256 px (scaled to the model)
    reset_free: bool = True  # start from δ = 0 (G) where the edit frees G: see start_deltas
    base_steps: int | None = None  # cap for a missing base fit; None = AdaptConfig.steps


class EarlyStop:
    """Tracks a score (higher is better); ``done`` once it stalls for ``patience`` steps."""

    def __init__(self, patience: int, min_gain: float):
        self.patience, self.min_gain = patience, min_gain
        self.best, self.best_step = float("-inf"), 0

    def update(self, step: int, score: float) -> bool:
        if score > self.best + self.min_gain:
            self.best, self.best_step = score, step
        return step - self.best_step >= self.patience


class PatchedPerturbation(Perturbation):
    """δ_i = base δ_i outside window w_i, ``local``'s δ_i inside it.

    base: full δ_i [1, C_i, H_i, W_i] (buffers, frozen); local: a DirectPerturbation holding
    the window crops [1, C_i, h_i, w_i].
    """

    def __init__(
        self, base: list[torch.Tensor], local: DirectPerturbation, windows: list[region.Window]
    ):
        super().__init__()
        self.shapes = [tuple(b.shape[1:]) for b in base]
        self.windows = list(windows)
        self.local = local
        for i, b in enumerate(base):
            self.register_buffer(f"base{i}", b.detach())

    def crops(self, outer: list[region.Window]) -> list[torch.Tensor]:
        """δ_i on larger windows outer_i ⊇ window i (the base's outside window i)."""
        out = []
        for i, (d, w, o) in enumerate(zip(self.local(), self.windows, outer, strict=True)):
            full = region.crop(getattr(self, f"base{i}"), o).clone()
            y0, y1, x0, x1 = region.shift(o, w)
            full[..., y0:y1, x0:x1] = d
            out.append(full)
        return out

    def forward(self) -> list[torch.Tensor]:
        return self.crops([region.full(s[-1]) for s in self.shapes])


def edit_window(keep: torch.Tensor, ring: int) -> region.Window:
    """Output window the fast fit optimises: the free zone (keep < 1) grown by ``ring``."""
    res = keep.shape[-1]
    box = region.bbox(keep < 1 - 1e-4)
    return region.full(res) if box is None else region.grow(box, ring, res)


def _deltas(fit: Fit | None) -> list[torch.Tensor] | None:
    if fit is None:
        return None
    with torch.no_grad():
        return [d.detach() for d in fit.perturbation()]


def start_deltas(
    base: list[torch.Tensor] | None,
    gen: LayeredGenerator,
    h: int,
    keep: torch.Tensor,
    reset_free: bool,
) -> list[torch.Tensor]:
    """Full δ_i [1, C_i, H_i, W_i] the fit starts from: the base fit's (zeros without one),
    times keep min-pooled to each layer (``reset_free``), so δ = 0 wherever an output pixel
    a layer pixel covers is free: there the fit starts from G, as R does."""
    if base is None:
        shapes = [gen.out_shape(i) for i in range(h, gen.n_layers - 1)]
        return [torch.zeros(1, *s, device=keep.device) for s in shapes]
    if not reset_free:
        return base
    return [d * -F.adaptive_max_pool2d(-keep, d.shape[-2:]) for d in base]


def fast_adapt(
    gen: LayeredGenerator,
    z_h: torch.Tensor,
    x: torch.Tensor,
    keep: torch.Tensor,
    cfg: AdaptConfig | None = None,
    fcfg: FastConfig | None = None,
    base: Fit | None = None,
    target: region.Window | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AdaptResult:
    """Fit G′ on a window with early stopping; see the module docstring.

    z_h: [1, C, H, W] at the split (after the edit); x: [1, 3, R, R]; keep: [1, 1, R, R].
    base: the image's base fit (any perturbation; δ outside the window stays its δ). target:
    output window to optimise; None = ``edit_window(keep)``, or the full frame without base.
    Without base and with a full-frame target this is ``adapt(variant="direct")`` with early
    stopping.
    """
    cfg, fcfg = cfg or AdaptConfig(), fcfg or FastConfig()
    res = gen.resolution
    h = gen.default_split() if cfg.split is None else cfg.split
    if target is None:
        ring = round(fcfg.ring * res / 256)
        target = edit_window(keep, ring) if base is not None else region.full(res)
    if not gen.local_layers:
        target = region.full(res)
    wins = region.plan(gen, h, target)  # computed: target plus receptive-field margin
    pwins = region.interior(gen, h, target)  # trainable: δ there only reaches target
    base_full = _deltas(base)
    start = start_deltas(base_full, gen, h, keep, fcfg.reset_free)
    crops = [region.crop(d, w).clone() for d, w in zip(start, pwins, strict=True)]
    local = DirectPerturbation([tuple(c.shape[1:]) for c in crops]).to(x.device)
    with torch.no_grad():
        for p, c in zip(local.deltas, crops, strict=True):
            p.copy_(c)
    # Outside its window δ is the base's (not the reset start): G′ there stays the base G′.
    pert = PatchedPerturbation(base_full or start, local, pwins)
    # The method's lr (0.1) also suits the warm fine-tune: 0.03 / 0.01 took 1.3–2× the steps
    # to the same psnr_keep (docs/performance.md).
    opt = make_adam(local.parameters(), cfg.lr)

    with torch.no_grad():  # g_{h+1}(z_h) before its δ: constant during the fit
        first = region.run_window(gen, z_h.detach(), wins[:2], start=h)
    x_w, keep_w = region.crop(x, target), region.crop(keep, target)
    n_rec = x.numel()  # normalise as the full-frame mean: same objective, minus a constant
    n_reg = [d.numel() for d in start]
    stop = EarlyStop(fcfg.patience, fcfg.min_gain)
    rep = Reporter("adapt", fcfg.max_steps, progress, cancel)
    steps = 0
    for i in range(fcfg.max_steps):
        deltas = pert.crops(wins[1:-1])
        out = region.run_window(gen, first * (1 + deltas[0]), wins[1:], deltas[1:], start=h + 1)
        rec = ((out - x_w).abs() * keep_w).sum() / n_rec
        reg = sum(d.pow(2).sum() / n for d, n in zip(local.deltas, n_reg, strict=True))
        loss = rec + cfg.lambda_reg * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps = i + 1
        check = steps % fcfg.check_every == 0
        score = psnr(out, x_w, keep_w) if check or rep.wants_psnr(i) else None
        rep.step(i, score)
        if check and stop.update(steps, score):
            break
    with torch.no_grad():
        image = run_gprime(gen, z_h, pert())
    whole = all(region.area(w) == gen.infos[h + i].size ** 2 for i, w in enumerate(pwins))
    fit = Fit(local if whole and base is None else pert, opt.state_dict(), keep.detach())
    return AdaptResult(fit, image, psnr(image, x, keep), steps)


def base_fit(
    gen: LayeredGenerator,
    z_h: torch.Tensor,
    x: torch.Tensor,
    cfg: AdaptConfig | None = None,
    fcfg: FastConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    keep: torch.Tensor | None = None,
) -> AdaptResult:
    """A cold fit (δ = 0 at the start): full frame, direct δ, early stopping, capped at
    ``fcfg.base_steps`` (None: cfg.steps). keep None = 1: the unedited photo's base fit."""
    cfg, fcfg = cfg or AdaptConfig(), fcfg or FastConfig()
    cap = cfg.steps if fcfg.base_steps is None else fcfg.base_steps
    fcfg = dataclasses.replace(fcfg, max_steps=cap)
    keep = torch.ones_like(x[:, :1]) if keep is None else keep
    return fast_adapt(gen, z_h, x, keep, cfg, fcfg, None, None, progress, cancel)
