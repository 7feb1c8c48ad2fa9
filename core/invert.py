"""Step 1: invert a photo into the generator.

Start: the model's encoder E when it has one (``core/encoder.py``: z = E(x)), otherwise
several random latents of which the one whose image is closest is kept. Then optimise z;
then optimise the edit layer's representation r directly (it is what gets edited, and it
has far more freedom than z). Loss L1 + MSE on pixels in [-1, 1].

Each phase stops early once the PSNR stops improving (``patience``): from an encoder's start
the optimisation has little left to do, and without one most of today's 400 steps buy
fractions of a dB (docs/performance.md, "first edit of a new photo").

``precision``: G's evaluations may run in bfloat16 (autocast; r, the loss and L-BFGS's
arithmetic stay float32, and the reported PSNR is a float32 render). "auto" does so only
where it pays: on a CPU with bf16 matrix units and a model of 128 px or more (ProGAN-256:
an evaluation 1.9× cheaper; the 64 px default model: no faster and 0.1–0.35 dB worse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .fast import EarlyStop
from .generators.base import LayeredGenerator
from .metrics import psnr
from .progress import CancelFn, ProgressFn, Reporter

Encoder = Callable[[torch.Tensor], torch.Tensor]  # image [1,3,R,R] -> latent [1,*latent_shape]


@dataclass
class InvertConfig:
    starts: int = 16  # random latents tried (without an encoder); the best one is optimised
    z_steps: int = 150  # at most; early stopping may end a phase sooner
    r_steps: int = 250
    lr_z: float = 0.05
    lr_r: float = 0.01
    seed: int = 0
    patience: int = 0  # end a phase after this many steps without min_gain dB; 0 = never
    min_gain: float = 0.05  # dB
    check_every: int = 10  # PSNR is measured every this many steps (it costs a sync)
    clamp: bool = False  # optimise through G's output clamped to [-1, 1] (ganseeing's Hardtanh)
    optimizer: str = "adam"  # "adam" | "lbfgs" (steps then count function evaluations)
    history: int = 100  # L-BFGS pairs kept: fewer evaluations per dB (docs/performance.md)
    loss: str = "l1+mse"  # "l1+mse" | "mse" (what PSNR measures)
    precision: str = "fp32"  # "fp32" | "bf16" | "auto" (see bf16_pays) for G's evaluations
    encoder: Encoder | None = None  # image → latent start (the model's, core/encoder.py)

    @property
    def total_steps(self) -> int:
        return self.z_steps + self.r_steps


FAITHFUL_EVALUATIONS = 1000  # a faithful inversion's cap; it ends when the PSNR stalls
FAITHFUL_PATIENCE = 100  # evaluations without a gain of FAITHFUL_MIN_GAIN dB that end it
FAITHFUL_MIN_GAIN = 0.01


def default_config(
    encoder: Encoder | None = None,
    total_steps: int | None = None,
    seed: int = 0,
    precision: str = "auto",
    quality: str = "fast",
) -> InvertConfig:
    """The inversion a photo gets: short and early-stopped from the encoder's start when the
    model has one, fewer starts and early stopping without (docs/performance.md measures
    each choice); with quality "faithful" it optimises until the PSNR stops improving
    (FAITHFUL_*), not within the fast path's budget. ``total_steps`` caps the steps (all
    at the edit layer: no z phase)."""
    # L-BFGS on the MSE straight at the edit layer, in one run: from the encoder's start
    # 120 evaluations with 20 pairs of history (on a small model the pairs cost as much to
    # read as G_F's evaluation does), from the best of 4 random ones 120 with 100 pairs (on
    # a large model only evaluations count); both beat today's 400 Adam steps on every
    # held-out face crop (docs/performance.md, "first edit of a new photo").
    lbfgs = {
        "optimizer": "lbfgs",
        "loss": "mse",
        "z_steps": 0,
        "seed": seed,
        "precision": precision,
    }
    if encoder is not None:
        cfg = InvertConfig(r_steps=120, history=20, patience=20, encoder=encoder, **lbfgs)
    else:
        cfg = InvertConfig(starts=4, r_steps=120, patience=20, **lbfgs)
    if quality == "faithful":
        cfg.r_steps, cfg.patience = FAITHFUL_EVALUATIONS, FAITHFUL_PATIENCE
        cfg.min_gain, cfg.history = FAITHFUL_MIN_GAIN, 100
    if total_steps is not None:
        cfg.r_steps = max(1, total_steps)
    return cfg


@dataclass
class Inversion:
    z: torch.Tensor  # [1, *latent_shape]
    r: torch.Tensor  # [1, C, H, W]: output of the edit layer
    layer: int  # 0-based index of the edit layer
    psnr: float  # dB of G(r) against the target, whole frame
    steps: int = 0  # optimisation steps taken (z + r)
    budget: int = 0  # the steps its config allowed (z + r): a larger one may refine it

    def nbytes(self) -> int:
        return self.z.numel() * self.z.element_size() + self.r.numel() * self.r.element_size()


OPTIMIZERS, LOSSES, PRECISIONS = ("adam", "lbfgs"), ("l1+mse", "mse"), ("fp32", "bf16", "auto")


def bf16_pays(resolution: int, device_type: str, cpu_bf16: bool) -> bool:
    """Whether "auto" precision evaluates G in bfloat16: only on a CPU whose oneDNN has bf16
    kernels (AMX or AVX-512 BF16; elsewhere bf16 is emulated and slower) and for a model of
    at least 128 px, whose convolutions are big enough to gain (measured on ProGAN-256 and
    the 64 px default model, docs/performance.md). CUDA keeps float32: not measured here."""
    return device_type == "cpu" and cpu_bf16 and resolution >= 128


def _cpu_has_bf16() -> bool:
    try:  # torch's own check (oneDNN: AVX-512 BF16 or AMX); private, so guarded
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(gen: LayeredGenerator, device: torch.device, precision: str) -> bool:
    """Whether an inversion of gen on device at this precision setting evaluates in bf16."""
    if precision != "auto":
        return precision == "bf16"
    return bf16_pays(gen.resolution, device.type, _cpu_has_bf16())


def _loss(
    out: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None, kind: str = "l1+mse"
) -> torch.Tensor:
    """Per-sample loss [B] of out against x ([B, 3, R, R]), optionally pixel-weighted."""
    d = out - x
    if w is not None:
        d = d * w
    mse = d.pow(2).mean(dim=(1, 2, 3))
    return mse if kind == "mse" else d.abs().mean(dim=(1, 2, 3)) + mse


def _render(gen: LayeredGenerator, v: torch.Tensor, start: int, cfg: InvertConfig) -> torch.Tensor:
    """G's layers[start:] on v, float32 out (computed in bfloat16 autocast when cfg says
    "bf16"; invert() has resolved "auto" by then)."""
    with torch.autocast(v.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = gen.run(v, start)
    out = out.float()
    return out.clamp(-1.0, 1.0) if cfg.clamp else out


def start_latent(
    gen: LayeredGenerator,
    x: torch.Tensor,
    cfg: InvertConfig,
    weight: torch.Tensor | None = None,
    encoder: Encoder | None = None,
) -> torch.Tensor:
    """The latent the optimisation starts from: E(x), or the best of ``cfg.starts`` random
    latents (judged in one batch: cheaper per start than one call each). [1, *latent_shape]."""
    with torch.no_grad():
        if encoder is not None:
            return encoder(x).reshape(1, *gen.latent_shape)
        rng = torch.Generator().manual_seed(cfg.seed)
        cands = gen.sample_latent(max(1, cfg.starts), rng)
        losses = torch.cat([_loss(_render(gen, c, 0, cfg), x, weight) for c in cands.split(8)])
        return cands[losses.argmin()][None]


def _optimise(
    gen: LayeredGenerator,
    v: torch.Tensor,
    start: int,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    steps: int,
    lr: float,
    cfg: InvertConfig,
    rep: Reporter,
    offset: int,
) -> tuple[torch.Tensor, int]:
    """Minimise the loss over v (the input of layers[start:]) for at most ``steps`` steps
    (L-BFGS: function evaluations); returns (v, steps taken)."""
    v = v.detach().clone().requires_grad_(True)
    stop = EarlyStop(cfg.patience, cfg.min_gain) if cfg.patience > 0 else None
    if cfg.optimizer == "lbfgs":
        return _lbfgs(gen, v, start, x, weight, steps, cfg, rep, offset, stop)
    done, last = 0, [None]

    def closure() -> torch.Tensor:
        out = _render(gen, v, start, cfg)
        loss = _loss(out, x, weight, cfg.loss).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        last[0] = out.detach()
        return loss

    opt = torch.optim.Adam([v], lr=lr)
    for i in range(steps):
        opt.step(closure)
        done = i + 1
        if _report(done, last[0], x, weight, cfg, rep, stop, offset):
            break
    return v.detach(), done


def _report(
    done: int,
    out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    cfg: InvertConfig,
    rep: Reporter,
    stop: EarlyStop | None,
    offset: int,
) -> bool:
    """After step ``done`` (1-based) of a phase: progress (PSNR only when it is reported or
    checked: it costs a sync) and whether early stopping ends the phase."""
    check = stop is not None and done % cfg.check_every == 0
    score = psnr(out, x, weight) if check or rep.wants_psnr(offset + done - 1) else None
    rep.step(offset + done - 1, score)
    return check and stop.update(done, score)


class _Stop(Exception):
    """Ends an L-BFGS run from inside its closure (budget spent or PSNR plateau)."""


def _lbfgs(
    gen: LayeredGenerator,
    v: torch.Tensor,
    start: int,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    steps: int,
    cfg: InvertConfig,
    rep: Reporter,
    offset: int,
    stop: EarlyStop | None,
) -> tuple[torch.Tensor, int]:
    """L-BFGS with a strong-Wolfe line search (no learning rate to tune) over the whole
    budget in one ``step``: each ``step`` call re-evaluates its starting point, so checking
    PSNR between chunks of 10 calls wasted one evaluation in ten. Progress, cancellation
    and early stopping run inside the closure instead, which may stop in the middle of a
    line search; the best point seen is returned. v requires grad; returns (v, evaluations)."""
    opt = torch.optim.LBFGS(
        [v],
        lr=1.0,
        max_iter=steps,
        max_eval=steps,
        history_size=cfg.history,
        line_search_fn="strong_wolfe",
    )
    best_loss, best_v, n = float("inf"), v.detach().clone(), 0

    def closure() -> torch.Tensor:
        nonlocal best_loss, best_v, n
        if n >= steps:  # a line search may ask for more than max_eval
            raise _Stop
        out = _render(gen, v, start, cfg)
        loss = _loss(out, x, weight, cfg.loss).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        if value < best_loss:
            best_loss, best_v = value, v.detach().clone()
        n += 1
        if _report(n, out.detach(), x, weight, cfg, rep, stop, offset):
            raise _Stop
        return loss

    try:
        opt.step(closure)  # returns early when L-BFGS converges (its tolerances)
    except _Stop:
        pass
    return best_v, n


def invert(
    gen: LayeredGenerator,
    x: torch.Tensor,
    cfg: InvertConfig | None = None,
    weight: torch.Tensor | None = None,
    encoder: Encoder | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    start: Inversion | None = None,
) -> Inversion:
    """Find z and the edit-layer representation r with G(r) ≈ x.

    x: [1, 3, R, R] in [-1, 1] at the generator's resolution. weight: optional [1, 1, R, R]
    pixel weights (1 = must match). encoder: image → latent map giving the start
    (default: cfg.encoder; None = random starts). start: an inversion of the same x to
    refine (its r is optimised further, for cfg.r_steps; no z phase).
    """
    cfg = cfg or InvertConfig()
    if cfg.optimizer not in OPTIMIZERS or cfg.loss not in LOSSES or cfg.precision not in PRECISIONS:
        raise ValueError(
            f"optimizer must be one of {OPTIMIZERS}, loss one of {LOSSES} and precision one "
            f"of {PRECISIONS}"
        )
    bf16 = uses_bf16(gen, x.device, cfg.precision)
    cfg = dataclasses.replace(cfg, precision="bf16" if bf16 else "fp32")
    encoder = encoder or cfg.encoder
    k = gen.edit_index
    if start is not None:
        cfg = dataclasses.replace(cfg, z_steps=0)
        z, nz, r0 = start.z, start.steps, start.r
    rep = Reporter("invert", cfg.total_steps, progress, cancel)
    if start is None:
        z0 = start_latent(gen, x, cfg, weight, encoder)
        z, nz = _optimise(gen, z0, 0, x, weight, cfg.z_steps, cfg.lr_z, cfg, rep, 0)
    gen = gen.bind(z)  # the layers after the edit layer keep z's styles (StyleGAN)
    if start is None:
        with torch.no_grad():
            r0 = gen.run(z, 0, k + 1)
    r, nr = _optimise(gen, r0, k + 1, x, weight, cfg.r_steps, cfg.lr_r, cfg, rep, cfg.z_steps)
    with torch.no_grad():
        final = psnr(gen.run(r, k + 1), x)
    if (nr if start is not None else nz + nr) < cfg.total_steps and progress is not None:
        rep.step(cfg.total_steps - 1, final)  # early stop: the bar ends at 100 %
    if start is not None and final < start.psnr:  # L-BFGS keeps its best; G(r) may differ
        return dataclasses.replace(start, budget=max(start.budget, cfg.total_steps))
    budget = cfg.total_steps if start is None else max(start.budget, cfg.total_steps)
    return Inversion(z, r, k, final, nz + nr, budget)
