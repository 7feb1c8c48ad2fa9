"""The fast G′ fit (issue #6): same objective, far less work per edit.

What the loss really needs. Far from the edit the photo pins G′ and the image's base fit (a
fit of the unedited image, kept in the session) already reproduces it; only pixels near the
edit must change. So the fast path

1. warm-starts from the base fit (R's weights and Adam state, or δ for ``direct``);
2. lets the perturbation change only inside a window around the free zone (keep < 1) plus a
   ring of pinned pixels, and computes G′_F only on that window plus its receptive-field
   margin (``region.plan``), skipping everything outside;
3. stops when psnr_keep on the window stops improving;
4. renders G′ on the full frame once.

The result is an exact member of the method's family: δ_i = the base δ_i outside the
window, the fine-tuned R's δ_i inside (``PatchedPerturbation``). Its loss restricted to the
window is the faithful loss minus a constant, so the gradients are the faithful ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from . import region
from .adapt import (
    AdaptConfig,
    AdaptResult,
    DirectPerturbation,
    Fit,
    Perturbation,
    PerturbationNetwork,
    make_adam,
    make_perturbation,
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
    patience: int = 30  # stop after this many steps without min_gain dB of improvement
    min_gain: float = 0.05  # dB
    ring: int | None = None  # pinned px around the free zone, at 256 px; None = 16
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

    base: full δ_i [1, C_i, H_i, W_i] (buffers, frozen); local: a PerturbationNetwork (its
    branches evaluated on the windows only) or a DirectPerturbation holding the window crops.
    """

    def __init__(self, base: list[torch.Tensor], local: Perturbation, windows: list[region.Window]):
        super().__init__()
        self.shapes = [tuple(b.shape[1:]) for b in base]
        self.windows = list(windows)
        self.local = local
        for i, b in enumerate(base):
            self.register_buffer(f"base{i}", b.detach())

    def local_deltas(self) -> list[torch.Tensor]:
        """δ_i on window i only: [1, C_i, h_i, w_i]."""
        if isinstance(self.local, PerturbationNetwork):
            return [
                region.branch_window(b, w)
                for b, w in zip(self.local.branches, self.windows, strict=True)
            ]
        return list(self.local())

    def crops(
        self, outer: list[region.Window], local: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """δ_i on larger windows outer_i ⊇ window i (base outside window i); local: the
        ``local_deltas()`` when already computed."""
        local = self.local_deltas() if local is None else local
        out = []
        for i, (d, w, o) in enumerate(zip(local, self.windows, outer, strict=True)):
            full = region.crop(getattr(self, f"base{i}"), o).clone()
            y0, y1, x0, x1 = region.shift(o, w)
            full[..., y0:y1, x0:x1] = d
            out.append(full)
        return out

    def forward(self) -> list[torch.Tensor]:
        return self.crops([region.full(s[-1]) for s in self.shapes])


def _local_from(
    fit: Fit | None,
    gen: LayeredGenerator,
    cfg: AdaptConfig,
    windows: list[region.Window],
    device: torch.device,
) -> tuple[Perturbation, dict]:
    """The trainable part and its Adam state, warm from ``fit`` when given."""
    if fit is None:
        return make_perturbation(gen, cfg).to(device), {}
    pert = fit.perturbation
    if isinstance(pert, PatchedPerturbation):
        raise ValueError("warm-start the fast path from a base fit, not from a fast fit")
    state = copy.deepcopy(fit.opt_state)
    if isinstance(pert, DirectPerturbation):
        crops = [
            region.crop(d.detach(), w).clone() for d, w in zip(pert.deltas, windows, strict=True)
        ]
        local = DirectPerturbation([tuple(c.shape[1:]) for c in crops])
        for p, c in zip(local.deltas, crops, strict=True):
            p.data.copy_(c)
        for k, st in state.get("state", {}).items():  # Adam moments cropped alike
            for name in ("exp_avg", "exp_avg_sq"):
                if name in st:
                    st[name] = region.crop(st[name], windows[int(k)]).clone()
        return local, state
    return copy.deepcopy(pert), state


def edit_window(keep: torch.Tensor, ring: int) -> region.Window:
    """Output window the fast fit optimises: the free zone (keep < 1) grown by ``ring``."""
    res = keep.shape[-1]
    box = region.bbox(keep < 1 - 1e-4)
    return region.full(res) if box is None else region.grow(box, ring, res)


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
    base: the image's base fit (warm start; δ outside the window stays the base's). target:
    output window to optimise; None = ``edit_window(keep)``, or the full frame without base.
    Without base and with a full-frame target this is ``adapt`` with early stopping.
    """
    cfg, fcfg = cfg or AdaptConfig(), fcfg or FastConfig()
    res = gen.resolution
    h = gen.default_split() if cfg.split is None else cfg.split
    if target is None:
        ring = round((16 if fcfg.ring is None else fcfg.ring) * res / 256)
        target = edit_window(keep, ring) if base is not None else region.full(res)
    wins = region.plan(gen, h, target)  # computed: target plus receptive-field margin
    pwins = region.interior(gen, h, target)  # trainable: δ there only reaches target
    local, state = _local_from(base, gen, cfg, pwins, x.device)
    whole = all(region.area(w) == gen.infos[h + i].size ** 2 for i, w in enumerate(pwins))
    if base is not None:
        with torch.no_grad():
            base_deltas = base.perturbation()
    else:
        base_deltas = [
            torch.zeros(1, *gen.out_shape(i), device=x.device) for i in range(h, gen.n_layers - 1)
        ]
    pert = PatchedPerturbation(base_deltas, local, pwins)
    opt = make_adam(local.parameters(), cfg.lr, state)

    z_w, x_w, keep_w = (
        region.crop(z_h.detach(), wins[0]),
        region.crop(x, target),
        region.crop(keep, target),
    )
    n_rec = x.numel()  # normalise as the full-frame mean: same objective, minus a constant
    n_reg = [b.numel() for b in base_deltas]
    stop = EarlyStop(fcfg.patience, fcfg.min_gain)
    rep = Reporter("adapt", fcfg.max_steps, progress, cancel)
    steps = 0
    for i in range(fcfg.max_steps):
        local_d = pert.local_deltas()
        deltas = pert.crops(wins[1:-1], local_d)
        out = region.run_window(gen, z_w, wins, deltas)
        rec = ((out - x_w).abs() * keep_w).sum() / n_rec
        reg = sum(d.pow(2).sum() / n for d, n in zip(local_d, n_reg, strict=True))
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
    fit = Fit(local if whole and base is None else pert, opt.state_dict())
    return AdaptResult(fit, image, psnr(image, x, keep), steps)


def base_fit(
    gen: LayeredGenerator,
    z_h: torch.Tensor,
    x: torch.Tensor,
    cfg: AdaptConfig | None = None,
    fcfg: FastConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AdaptResult:
    """A fit of the unedited image (keep = 1), full frame, with early stopping."""
    cfg, fcfg = cfg or AdaptConfig(), fcfg or FastConfig()
    cap = cfg.steps if fcfg.base_steps is None else fcfg.base_steps
    fcfg = FastConfig(cap, fcfg.check_every, fcfg.patience, fcfg.min_gain, fcfg.ring)
    keep = torch.ones_like(x[:, :1])
    return fast_adapt(gen, z_h, x, keep, cfg, fcfg, None, None, progress, cancel)
