"""A selection's fade that follows the photo's edges: the fast guided filter.

An edit's change fades in from 0 at the selection's edge so that it never steps there. Where
that edge runs over a plain wall, the fade must be wide (a narrow one shows every corner of
a traced polygon); where it runs along the photo's own edge (a hairline, the outline of a
head against the sky), a wide fade leaves a band of the old colour inside the selection: dark
roots under blond hair, and a thin selection that gets less than half the change.

The guided filter (He, Sun, Tang, ECCV 2010; its subsampled form, He and Sun 2015) smooths
the selection p as a locally affine function of the photo's colour I: in each (2r + 1)²
window, q = aᵀI + b with a = (Σ_I + ε·1)⁻¹ cov(I, p), b = mean(p) − aᵀ mean(I), both then
averaged over the windows that cover a pixel. Over a plain area, a ≈ 0 and q is the
selection blurred twice by the box (a ramp 2r wide); across an edge of the photo that the
selection follows, q follows the photo's edge at full resolution. The coefficients are
computed at 1/s of the resolution (they vary slowly) and applied to the full-size photo.

Tensors: guide [3, H, W] in [0, 1]; selections and results [H, W] in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Unselected pixels near the edge that the filter rates this high (as like the selected ones)
# mean the selection cuts through content rather than follows an edge: no lift there.
LEAK = 0.5


def box_mean(t: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of [C, H, W] over (2r + 1)² windows, clipped at the border (each pixel the mean
    of the window's part inside the image): running sums, O(1) per pixel at any r."""
    for dim in (-1, -2):
        n = t.shape[dim]
        k = min(r, n - 1)
        cs = F.pad(t.movedim(dim, -1).cumsum(-1), (1, 0))  # [..., n + 1], cs[i] = sum[:i]
        # window i covers [max(i − r, 0), min(i + r + 1, n)): sums as differences of cs
        hi = torch.cat([cs[..., k + 1 :], cs[..., -1:].expand(*cs.shape[:-1], k)], -1)
        lo = torch.cat([cs[..., :1].expand(*cs.shape[:-1], k), cs[..., : n - k]], -1)
        idx = torch.arange(n, device=t.device)
        count = ((idx + r + 1).clamp(max=n) - (idx - r).clamp(min=0)).to(t.dtype)
        t = ((hi - lo) / count).movedim(-1, dim)
    return t


def guided_filter(
    guide: torch.Tensor, p: torch.Tensor, radius: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, flat, leak), each [H, W]: p [H, W] smoothed over ~``radius`` px edge-aware with
    the colour guide [3, H, W]; the same smoothing blind to the guide (a = 0: p blurred by
    the box twice); and the highest q of an unselected pixel (p < 0.5) within the window.
    ``eps`` (in the guide's squared units) is the variance below which the guide's changes
    count as flat (texture and noise) rather than as an edge."""
    h, w = p.shape
    s = max(1, math.floor(radius / 4))
    r = max(1, round(radius / s))
    g = F.avg_pool2d(guide[None], s, ceil_mode=True)[0] if s > 1 else guide
    p_lo = F.avg_pool2d(p[None, None], s, ceil_mode=True)[0] if s > 1 else p[None]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    stack = torch.cat([g, p_lo, g * p_lo, torch.stack([g[i] * g[j] for i, j in pairs])])
    m = box_mean(stack, r)
    mean_i, mean_p, mean_ip, mean_ii = m[:3], m[3:4], m[4:7], m[7:]
    cov_ip = mean_ip - mean_i * mean_p
    sigma = torch.empty(3, 3, *g.shape[1:], dtype=g.dtype, device=g.device)
    for k, (i, j) in enumerate(pairs):
        sigma[i, j] = sigma[j, i] = mean_ii[k] - mean_i[i] * mean_i[j]
    sigma += eps * torch.eye(3, dtype=g.dtype, device=g.device)[..., None, None]
    a = torch.linalg.solve(sigma.permute(2, 3, 0, 1), cov_ip.permute(1, 2, 0)[..., None])
    a = a[..., 0].permute(2, 0, 1)  # [3, h/s, w/s]
    b = mean_p - (a * mean_i).sum(0, keepdim=True)
    ab = box_mean(torch.cat([a, b, mean_p]), r)
    # What the filter says of the unselected pixels nearby: high where the selection's
    # edge cuts through content like what it holds (no photo edge separates them there).
    q_lo = (ab[:3] * g).sum(0, keepdim=True) + ab[3:4]
    unselected = torch.where(p_lo < 0.5, q_lo, torch.zeros_like(q_lo))
    leak = F.max_pool2d(unselected[None], 2 * r + 1, stride=1, padding=r)[0]
    ab = torch.cat([ab, leak])
    if s > 1:
        ab = F.interpolate(ab[None], scale_factor=s, mode="bilinear", align_corners=False)[0]
        ab = ab[:, :h, :w]
    return (ab[:3] * guide).sum(0) + ab[3], ab[4], ab[5]


def edge_aware_fade(
    fade: torch.Tensor, sel: torch.Tensor, guide: torch.Tensor, radius: float, eps: float
) -> torch.Tensor:
    """``fade`` [H, W] (0 at the edge of the selection ``sel`` [H, W], 1 at ~``radius``
    inside, blind to the photo) brought up toward 1 on the inner side of photo edges that
    the selection's edge follows; [H, W] in [0, 1], never above ``sel``.

    With q the guided filter of ``sel`` over radius / 2 and q₀ its photo-blind part, the
    share t = (q − q₀) / (1 − q₀) of what the blind blur left out that the photo's edges
    explain lifts the fade: fade + (1 − fade)·t. Over a plain area q = q₀, so the fade is
    kept exactly (0 at the selection's edge, also in a concave corner, where q₀ > 0.5);
    just inside a photo edge along the selection's edge q ≈ 1 and the change is there at
    once; on its outer side q < q₀ and nothing is lifted. The lift is also capped by
    smoothstep((q − 0.6) / 0.3): where the selection cuts across a plain band whose sides
    it follows (q ≈ 0.5 at the cut, q₀ lower), the change still fades in from 0. And it
    goes to 0 as the highest q of an unselected pixel nearby reaches ``LEAK``: where the
    selection's edge cuts through hair (a hard ellipse across the curls), hair is on both
    sides, and a change that were there at once would step where the photo does not."""
    q, flat, leak = guided_filter(guide, sel, radius / 2, eps)
    t = ((q - flat) / (1 - flat).clamp_min(1e-3)).clamp_(0, 1)
    t *= 1 - (leak / LEAK).clamp_(0, 1)
    u = ((q - 0.6) / 0.3).clamp_(0, 1)
    return torch.minimum(sel, fade + (1 - fade) * t * u * u * (3 - 2 * u))
