"""Image quality numbers used in reports and progress."""

from __future__ import annotations

import math

import torch


def psnr(
    a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None, data_range: float = 2.0
) -> float:
    """PSNR in dB of a against b ([B, C, H, W], values in [-1, 1] so range 2).

    weight: optional [B, 1, H, W] in [0, 1]; the MSE is the weighted mean over pixels.
    """
    d2 = (a.detach() - b.detach()).float().pow(2)
    if weight is None:
        mse = d2.mean().item()
    else:
        w = weight.detach().float().expand_as(d2)
        total = w.sum().item()
        if total <= 0:
            return float("nan")
        mse = (d2 * w).sum().item() / total
    return float("inf") if mse <= 0 else 10.0 * math.log10(data_range**2 / mse)
