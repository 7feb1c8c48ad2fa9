"""The edit as a local colour transform: a bilateral grid of affine colour changes.

Most of what a GAN edit does to a photo region is a change of colour and tone (hair turns
blond, a background darkens). G′ renders that change at the generator's resolution R (64
px), far below the photo's. Carried into the photo as pixels, it is a smear; carried as a
*transform* of the photo's own pixels, every strand and grain stays and takes the new colour.

The transform is bilateral guided upsampling (Chen, Adams, Wadhwa, Hasinoff, SIGGRAPH Asia
2016), with a local closed-form fit instead of a global solve: a grid of ``cells`` × ``cells``
spatial cells × ``bins`` luminance bins, each vertex holding a 3×4 affine colour change D, so
that a pixel p of colour s (RGB in [0, 1]) and luminance ℓ becomes s + D(y, x, ℓ)·[s; 1],
D interpolated trilinearly from the 8 vertices around (y, x, ℓ). The luminance axis is what
makes it edge-aware: dark hair and the pale skin beside it fall into different bins of the
same cell and get different changes.

Fit, at R: source s = x (the photo's crop), target t = x + (E − B) (the photo plus the edit's
change; E − B cancels G′'s own reconstruction error, which a fit of x → E would carry in).
Each pixel's moments (w·v vᵀ, w·v (t − s)ᵀ with v = [s; 1]) are splatted onto the grid, the
moment grids are blurred (the smoothness: a vertex borrows the evidence of its neighbours,
so the 64-px rendering's colour blotches average out), and each vertex solves its 4×4 ridge
system toward [0 | μ]: no colour change beyond the mean shift μ of its spatial neighbourhood
(over all luminances), where its own bins saw no pixels. A null edit fits D = 0 exactly.

Tensors: photos [1, 3, H, W] in [0, 1]; the grid [1, 12, bins + 1, cells + 1, cells + 1]
(row-major D: channel 4·c + k is D[c, k]), laid out for ``F.grid_sample`` (x, y, ℓ order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of the sRGB-encoded values


@dataclass
class GridConfig:
    cells: int = 16  # spatial cells per side of the crop
    bins: int = 8  # luminance bins over [0, 1]
    blur: float = 1.0  # σ of the moments' blur across space, in vertices
    blur_luma: float = 0.75  # σ across luminance, in vertices
    ridge: float = 0.05  # pull toward [0 | μ], × the mean pixel weight of a vertex
    neutral: float = 2.0 / 255  # a photo whose chroma stays below this is black and white


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] Rec. 601 luma of the (gamma-encoded) values."""
    w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def _coords(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int], size: int, dev):
    """Normalised [-1, 1] grid coordinates of pixel centres rows × cols of a size×size crop."""
    ys = (torch.arange(rows[0], rows[1], device=dev, dtype=torch.float32) + 0.5) / size * 2 - 1
    xs = (torch.arange(cols[0], cols[1], device=dev, dtype=torch.float32) + 0.5) / size * 2 - 1
    return ys.view(h, 1).expand(h, w), xs.view(1, w).expand(h, w)


def _splat(values: torch.Tensor, gy, gx, gl, cfg: GridConfig) -> torch.Tensor:
    """Trilinear splat (the transpose of ``grid_sample``'s slice) of values [K, N] at
    normalised coordinates gy, gx, gl [N] onto [K, bins + 1, cells + 1, cells + 1]."""
    n_c, n_l = cfg.cells + 1, cfg.bins + 1
    fy, fx = (gy + 1) / 2 * cfg.cells, (gx + 1) / 2 * cfg.cells
    fl = gl.clamp(0, 1) * cfg.bins
    out = values.new_zeros(values.shape[0], n_l * n_c * n_c)
    y0, x0, l0 = (
        f.floor().clamp(0, m - 1) for f, m in ((fy, cfg.cells), (fx, cfg.cells), (fl, cfg.bins))
    )
    ty, tx, tl = fy - y0, fx - x0, fl - l0
    y0, x0, l0 = y0.long(), x0.long(), l0.long()
    for dl in (0, 1):
        wl = tl if dl else 1 - tl
        for dy in (0, 1):
            wy = ty if dy else 1 - ty
            for dx in (0, 1):
                wx = tx if dx else 1 - tx
                idx = ((l0 + dl) * n_c + (y0 + dy)) * n_c + (x0 + dx)
                out.index_add_(1, idx, values * (wl * wy * wx))
    return out.view(values.shape[0], n_l, n_c, n_c)


def _blur3(t: torch.Tensor, sigma: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of [K, L, Y, X] along L, Y, X (σ in vertices; edges
    renormalised so a border vertex is not darkened by the zeros past it)."""
    for dim, s in zip((1, 2, 3), sigma, strict=True):
        if s <= 0:
            continue
        r = max(1, int(round(3 * s)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=t.dtype, device=t.device) / s) ** 2)
        k = k / k.sum()
        moved = t.movedim(dim, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        ones = torch.ones(1, 1, shape[-1], dtype=t.dtype, device=t.device)
        num = F.conv1d(F.pad(flat, (r, r)), k.view(1, 1, -1))
        den = F.conv1d(F.pad(ones, (r, r)), k.view(1, 1, -1))
        t = (num / den).reshape(shape).movedim(-1, dim)
    return t


def fit_grid(
    source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, cfg: GridConfig
) -> torch.Tensor:
    """The grid of local colour changes that takes source [1, 3, R, R] to target (same
    shape, both in [0, 1]) where weight [1, 1, R, R] counts; see the module docstring.
    Returns [1, 12, bins + 1, cells + 1, cells + 1]."""
    s, t, w = (a.detach().float()[0] for a in (source, target, weight))
    r = s.shape[-1]
    gy, gx = _coords(r, r, (0, r), (0, r), r, s.device)
    gl = luminance(s[None])[0, 0]
    v = torch.cat([s, torch.ones_like(s[:1])]).flatten(1)  # [4, N]
    d = (t - s).flatten(1)  # [3, N]
    wf = w.flatten(1)  # [1, N]
    mom = torch.cat(
        [(v[:, None] * v[None]).flatten(0, 1) * wf, (v[:, None] * d[None]).flatten(0, 1) * wf]
    )  # [16 + 12, N]: w·v vᵀ, w·v dᵀ
    grid = _splat(mom, gy.flatten(), gx.flatten(), gl.flatten(), cfg)
    grid = _blur3(grid, (cfg.blur_luma, cfg.blur, cfg.blur)).double()  # the solve in float64
    k = grid.shape[1:]
    m = grid[:16].permute(1, 2, 3, 0).reshape(*k, 4, 4)
    b = grid[16:].permute(1, 2, 3, 0).reshape(*k, 4, 3)
    # Prior: the mean shift of the vertex's neighbourhood over all luminances, no matrix.
    count = m[..., 3, 3]
    marg = _blur3(grid[[15, 16 + 9, 16 + 10, 16 + 11]], (float(cfg.bins), 0.0, 0.0))
    mu = marg[1:] / marg[:1].clamp_min(1e-12)  # [3, L, Y, X]: Σ w·d / Σ w
    lam = cfg.ridge * count.mean().clamp_min(1e-12)
    prior = torch.zeros(*k, 4, 3, dtype=m.dtype, device=m.device)
    prior[..., 3, :] = mu.permute(1, 2, 3, 0)
    eye = torch.eye(4, dtype=m.dtype, device=m.device)
    sol = torch.linalg.solve(m + lam * eye, b + lam * prior)  # [L, Y, X, 4, 3] = Dᵀ
    return sol.transpose(-1, -2).reshape(*k, 12).permute(3, 0, 1, 2)[None].float()


STRIP_ROWS = 256  # rows sliced at once: the 12 interpolated coefficients are 48 B a pixel


def slice_grid(
    grid: torch.Tensor,
    photo: torch.Tensor,
    size: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> torch.Tensor:
    """The change D·[p; 1] [3, h, w] for the photo's pixels photo [3, h, w] in [0, 1] that lie
    at rows × cols of the size×size crop the grid was fitted on (luminance from the photo)."""
    h, w = photo.shape[-2:]
    out = torch.empty_like(photo)
    for a in range(0, h, STRIP_ROWS):
        b = min(a + STRIP_ROWS, h)
        p = photo[:, a:b]
        gy, gx = _coords(b - a, w, (rows[0] + a, rows[0] + b), cols, size, photo.device)
        gl = luminance(p[None])[0, 0].clamp(0, 1) * 2 - 1
        at = torch.stack([gx, gy, gl], -1)[None, None]  # [1, 1, h, w, 3] as (x, y, ℓ)
        dm = F.grid_sample(grid, at, mode="bilinear", padding_mode="border", align_corners=True)
        dm = dm[0, :, 0].view(3, 4, b - a, w)
        out[:, a:b] = (dm[:, :3] * p[None]).sum(1) + dm[:, 3]
    return out


def is_neutral(rgb: torch.Tensor, cfg: GridConfig) -> bool:
    """Whether [.., 3, H, W] in [0, 1] is black and white: its chroma (max − min channel)
    stays under ``cfg.neutral`` for 99 % of the pixels."""
    chroma = rgb.amax(-3) - rgb.amin(-3)
    flat = chroma.flatten()
    if flat.numel() > 250_000:
        flat = flat[:: flat.numel() // 250_000 + 1]
    return bool(flat.float().quantile(0.99) <= cfg.neutral)
