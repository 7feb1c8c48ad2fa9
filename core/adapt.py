"""Step 3: fit an image-specific G′ that reproduces the photo outside the edit.

G′_F(z_h) = g_n((1+δ_{n−1}) ⊙ g_{n−1}( … (1+δ_{h+1}) ⊙ g_{h+1}(z_h) … )), each δ_i of the
full shape of layer i's output. G and G_H stay frozen; only the perturbation trains.
Loss = mean(|G′(z_e) − x| ⊙ keep) + λ_reg Σ_i mean(δ_i²), Adam, lr 0.1.

Two perturbations: ``PerturbationNetwork`` (the method's R: no data input, a
deep-image-prior style network on fixed noise) and ``DirectPerturbation`` (the cheaper
ablation that learns the δ_i tensors themselves).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blur import gaussian_blur
from .generators.base import LayeredGenerator
from .metrics import psnr
from .progress import CancelFn, ProgressFn, Reporter

VARIANTS = ("network", "direct")


DEFAULT_STEPS = 1000  # G′ steps of a faithful fit, as the method publishes


@dataclass
class AdaptConfig:
    steps: int = DEFAULT_STEPS
    lr: float = 0.1
    lambda_reg: float = 0.1
    variant: str = "network"  # "network" (R, faithful) | "direct" (learn δ_i directly)
    split: int | None = None  # h; None = the generator's default (n − 5, clamped)
    seed: int = 0
    width: int = 64  # R's hidden channels per perturbed layer


class Perturbation(nn.Module):
    """Produces the list δ_i, one [1, C_i, H_i, W_i] per perturbed layer."""

    shapes: list[tuple[int, int, int]]

    def forward(self) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class DirectPerturbation(Perturbation):
    """δ_i are free tensors, zero at the start."""

    def __init__(self, shapes: list[tuple[int, int, int]]):
        super().__init__()
        self.shapes = shapes
        self.deltas = nn.ParameterList([nn.Parameter(torch.zeros(1, *s)) for s in shapes])

    def forward(self) -> list[torch.Tensor]:
        return list(self.deltas)


class _EqConv(nn.Module):
    """Conv with an equalised learning rate: weights stored N(0, 1), scaled by 1/√fan_in at
    run time. Adam's step is then the same relative size for any width, which is what keeps
    R stable at the method's lr of 0.1 (plain convs diverge there from width 64 on)."""

    def __init__(self, cin: int, cout: int, k: int, zero: bool = False):
        super().__init__()
        init = torch.zeros if zero else torch.randn
        self.weight = nn.Parameter(init(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale, self.pad = 1 / math.sqrt(cin * k * k), k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


class _LayerR(nn.Module):
    """R's branch for one layer: fixed noise → conv3×3 → LeakyReLU → conv3×3 → LeakyReLU →
    1×1 conv to C_i. The last conv starts at zero, so δ_i = 0 and G′ = G at step 0."""

    def __init__(self, shape: tuple[int, int, int], width: int, rng: torch.Generator):
        super().__init__()
        c, h, w = shape
        self.register_buffer("noise", torch.randn(1, width, h, w, generator=rng))
        self.body = nn.Sequential(
            _EqConv(width, width, 3),
            nn.LeakyReLU(0.2),
            _EqConv(width, width, 3),
            nn.LeakyReLU(0.2),
        )
        self.head = _EqConv(width, c, 1, zero=True)

    def forward(self) -> torch.Tensor:
        return self.head(self.body(self.noise))


class PerturbationNetwork(Perturbation):
    """The method's R: no data input; one small DIP branch per perturbed layer."""

    def __init__(self, shapes: list[tuple[int, int, int]], width: int = 32, seed: int = 0):
        super().__init__()
        self.shapes = shapes
        rng = torch.Generator().manual_seed(seed)
        # Deterministic init regardless of the global RNG: the fork pins torch's default.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.branches = nn.ModuleList([_LayerR(s, width, rng) for s in shapes])

    def forward(self) -> list[torch.Tensor]:
        return [b() for b in self.branches]


def make_perturbation(gen: LayeredGenerator, cfg: AdaptConfig) -> Perturbation:
    h = gen.default_split() if cfg.split is None else cfg.split
    if not 0 < h < gen.n_layers:
        raise ValueError(f"split h={h} must be in 1..{gen.n_layers - 1}")
    shapes = [gen.out_shape(i) for i in range(h, gen.n_layers - 1)]
    if cfg.variant == "direct":
        return DirectPerturbation(shapes)
    if cfg.variant == "network":
        return PerturbationNetwork(shapes, cfg.width, cfg.seed)
    raise ValueError(f"variant must be one of {VARIANTS}, not {cfg.variant!r}")


def split_of(gen: LayeredGenerator, pert: Perturbation) -> int:
    """h for a perturbation: it perturbs layers h .. n−2."""
    return gen.n_layers - 1 - len(pert.shapes)


def run_gprime(
    gen: LayeredGenerator,
    z_h: torch.Tensor,
    deltas: list[torch.Tensor],
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """G′_F(z_h): [1, C_h, H, W] at the split -> image [1, 3, R, R].

    first: g_{h+1}(z_h), the first G_F layer's output before its δ, when already computed;
    it does not change while only δ trains, so a fit computes it once.
    """
    h = gen.n_layers - 1 - len(deltas)
    x = gen.layers[h](z_h) if first is None else first
    x = x * (1 + deltas[0])
    for layer, d in zip(gen.layers[h + 1 : -1], deltas[1:], strict=True):
        x = layer(x) * (1 + d)
    return gen.layers[-1](x)


def keep_mask(mask: torch.Tensor, resolution: int) -> torch.Tensor:
    """keep = 1 − blur_σ(dilate_d(mask)), σ = 4 and d = 16 at 256 px, scaled to resolution.

    mask: [B, 1, H, W] in [0, 1] (resized to resolution). Returns [B, 1, R, R]: 1 where G′
    must reproduce the photo, 0 near the edit where it is free.
    """
    m = (
        F.interpolate(mask, size=(resolution, resolution), mode="area")
        if mask.shape[-1] != resolution
        else mask
    )
    s = resolution / 256
    d = max(1, round(16 * s))
    m = F.max_pool2d(m, 2 * d + 1, stride=1, padding=d)
    sigma = max(0.5, 4 * s)
    return 1 - gaussian_blur(m, sigma).clamp(0, 1)


@dataclass
class Fit:
    """A trained perturbation and its optimiser state.

    Warm starts need both: a fresh Adam's first steps move every parameter by ~lr, which
    would throw a good fit away before it helps.
    """

    perturbation: Perturbation
    opt_state: dict
    # [1, 1, R, R] the keep mask the fit pinned; None = not known. A later fit may start
    # from this one only where this one reproduced the photo (pipeline._fast_start).
    keep: torch.Tensor | None = None

    def nbytes(self) -> int:
        tensors = list(self.perturbation.state_dict().values())
        tensors += [self.keep] if self.keep is not None else []
        for st in self.opt_state.get("state", {}).values():
            tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class AdaptResult:
    fit: Fit
    image: torch.Tensor  # G′(z_h) [1, 3, R, R]
    psnr_keep: float
    steps: int

    @property
    def perturbation(self) -> Perturbation:
        return self.fit.perturbation


def make_adam(params, lr: float, state: dict | None = None) -> torch.optim.Adam:
    """Adam at ``lr``, resuming a saved state (moments and step count) when given; the
    saved learning rate is overridden so a warm start follows this config."""
    opt = torch.optim.Adam(params, lr=lr)
    if state:
        opt.load_state_dict(state)
        for group in opt.param_groups:
            group["lr"] = lr
    return opt


def adapt(
    gen: LayeredGenerator,
    z_h: torch.Tensor,
    x: torch.Tensor,
    keep: torch.Tensor,
    cfg: AdaptConfig | None = None,
    init: Fit | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AdaptResult:
    """Fit the perturbation so that G′(z_h) ≈ x where keep = 1.

    z_h: [1, C, H, W] representation at the split (after the edit); x: [1, 3, R, R] target
    in [-1, 1]; keep: [1, 1, R, R]. init: a fit to warm-start from (copied, not modified),
    e.g. the image's cached base fit.
    """
    cfg = cfg or AdaptConfig()
    pert = copy.deepcopy(init.perturbation) if init else make_perturbation(gen, cfg).to(x.device)
    z_h = z_h.detach()
    opt = make_adam(pert.parameters(), cfg.lr, copy.deepcopy(init.opt_state) if init else None)
    rep = Reporter("adapt", cfg.steps, progress, cancel)
    with torch.no_grad():
        first = gen.layers[split_of(gen, pert)](z_h)
    for i in range(cfg.steps):
        deltas = pert()
        out = run_gprime(gen, z_h, deltas, first)
        rec = ((out - x).abs() * keep).mean()
        reg = sum(d.pow(2).mean() for d in deltas)
        loss = rec + cfg.lambda_reg * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rep.step(i, psnr(out, x, keep) if rep.wants_psnr(i) else None)
    with torch.no_grad():
        out = run_gprime(gen, z_h, pert())
    fit = Fit(pert, opt.state_dict(), keep.detach())
    return AdaptResult(fit, out, psnr(out, x, keep), cfg.steps)
