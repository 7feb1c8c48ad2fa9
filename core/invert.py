"""Step 1: invert a photo into the generator (encoder-free by default).

Multi-start: draw several latents, keep the one whose image is closest; optimise z; then
optimise the edit layer's representation r directly (it is what gets edited, and it has
far more freedom than z). Loss L1 + MSE on pixels in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .generators.base import LayeredGenerator
from .metrics import psnr
from .progress import CancelFn, ProgressFn, Reporter

Encoder = Callable[[torch.Tensor], torch.Tensor]  # image [1,3,R,R] -> latent [1,*latent_shape]


@dataclass
class InvertConfig:
    starts: int = 16  # random latents tried; the best one is optimised
    z_steps: int = 150
    r_steps: int = 250
    lr_z: float = 0.05
    lr_r: float = 0.01
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.z_steps + self.r_steps


@dataclass
class Inversion:
    z: torch.Tensor  # [1, *latent_shape]
    r: torch.Tensor  # [1, C, H, W]: output of the edit layer
    layer: int  # 0-based index of the edit layer
    psnr: float  # dB of G(r) against the target, whole frame

    def nbytes(self) -> int:
        return self.z.numel() * self.z.element_size() + self.r.numel() * self.r.element_size()


def _loss(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    d = out - x
    if w is not None:
        d = d * w
    return d.abs().mean(dim=(1, 2, 3)) + d.pow(2).mean(dim=(1, 2, 3))


def invert(
    gen: LayeredGenerator,
    x: torch.Tensor,
    cfg: InvertConfig | None = None,
    weight: torch.Tensor | None = None,
    encoder: Encoder | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Inversion:
    """Find z and the edit-layer representation r with G(r) ≈ x.

    x: [1, 3, R, R] in [-1, 1] at the generator's resolution. weight: optional [1, 1, R, R]
    pixel weights (1 = must match). encoder: optional hook giving the starting latent.
    """
    cfg = cfg or InvertConfig()
    k = gen.edit_index
    rng = torch.Generator().manual_seed(cfg.seed)
    rep = Reporter("invert", cfg.total_steps, progress, cancel)

    with torch.no_grad():
        if encoder is not None:
            z = encoder(x).reshape(1, *gen.latent_shape)
        else:
            cands = gen.sample_latent(cfg.starts, rng)
            losses = torch.cat([_loss(gen(c[None]), x, weight) for c in cands])
            z = cands[losses.argmin()][None]
    z = z.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr_z)
    for i in range(cfg.z_steps):
        out = gen(z)
        loss = _loss(out, x, weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rep.step(i, psnr(out.detach(), x) if rep.wants_psnr(i) else None)

    with torch.no_grad():
        r0 = gen.run(z.detach(), 0, k + 1)
    r = r0.clone().requires_grad_(True)
    opt = torch.optim.Adam([r], lr=cfg.lr_r)
    for i in range(cfg.r_steps):
        out = gen.run(r, k + 1)
        loss = _loss(out, x, weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rep.step(
            cfg.z_steps + i, psnr(out.detach(), x) if rep.wants_psnr(cfg.z_steps + i) else None
        )

    r = r.detach()
    with torch.no_grad():
        final = psnr(gen.run(r, k + 1), x)
    return Inversion(z.detach(), r, k, final)
