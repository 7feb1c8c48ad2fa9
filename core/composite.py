"""Step 4 at the photo's resolution: carry only the edit's change into the photo.

G′ renders at the generator's resolution R (64 or 256 px), the photo's crop is S px (often
1000–2000). Enlarging G′'s rendering and pasting it, as the method's step 4 does at R, blurs
the whole selection. Instead, with E = G′(r_e) (edited), B = G′(r) (the same fit on the
unedited representation) and x the photo's crop at R, all [1, 3, R, R] in [-1, 1], the edit's
change Δ = E − B reaches the photo P in one of two regimes:

- **Colour change** (most of what an edit does: hair turns blond, a wall darkens): Δ is
  explained as a local colour transform of the photo (colour_grid.py: a bilateral grid of
  affine colour changes fitted at R from x to x + Δ, applied to P's own pixels at full
  resolution and sliced by P's luminance). Every strand and grain of the photo stays and
  takes the new colour; the grid's smoothness keeps the 64-px rendering's colour blotches
  out. A black-and-white photo gets the change's luminance only.
- **New content**: where the transform cannot explain Δ (its residual ρ = Δ − explained is
  large) or explains it only by flattening the photo (its luminance gain falls near 0),
  G′ drew something new. There the old content's detail must not ghost through, so the
  photo's band above R (H = P − up(x)) is removed and the low band becomes G′'s own,
  ``up(E)``, with grain N re-synthesised from the photo where content stays (``grain``:
  per octave of a Laplacian pyramid, the band's robust 3×3 colour covariance shapes white
  noise; like shot noise, ∝ √brightness), so it is not a blurred patch.

α = smoothstep of the blurred |ρ| (and of the gain) marks new content; the regimes meet
through it smoothly: the low band is (1 − α)·(colour change) + α·up(E − x).
Two feathers around one boundary: the low-band change fades in over ``feather`` × S (at
least two generator pixels) from exactly 0 at the selection's edge (an eroded selection,
not a blurred one cut at the edge); the high band switches where the low band is half
way, H to N with energy-preserving weights cos/sin, over ``fine_feather`` px but at least
one generator pixel (S / R px): H holds structure up to that scale, and beside an edge it is
locally far from zero-mean, so a faster switch steps there. No band leaves a seam or a rim.
The colour change's fade also follows the photo's edges (guided.py): where the selection's
edge runs along an edge of the photo (a hairline, a head against the wall), the change is
there right inside it, so a thin selection (short hair, 100 px thick) gets all of it, not a
band of the old colour; only where the transform keeps the tones' contrast at R (luminance
gain ``lift_gain``: a cell that mixes dark hair with pale skin flattens the tones between
them, and there the blind fade keeps the photo's own). New content keeps the blind fade.

out = P + w_c·(1 − α)·C + w_low·up(α·(E − x)) + (a − 1)·H + b·N, with C the colour
transform's change of P, w_c ≥ w_low its edge-aware fade, a = cos(π/2·w_high·α),
b = sin(π/2·w_high·α). α = 0 gives P + w_c·C (a null edit: C = 0, the photo bit for bit);
α = 1 and w = 1 give up(E) + N.
Reconstruct (``replace=False``) adds up(Δ) to the photo: G′'s error in its own band.

Photo arrays are numpy [H, W, C] (C = 3 or 4, alpha untouched), uint8/uint16; masks [H, W]
uint8. Only pixels with mask > 0 change; work happens on the selection's bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .blur import gaussian_blur
from .colour_grid import GridConfig, fit_grid, is_neutral, luminance, slice_grid
from .guided import edge_aware_fade
from .photo import DTYPE_MAX, Box, mask_window

Window = tuple[int, int, int, int]  # (y0, y1, x0, x1) in image coordinates, half-open
GAIN_STEP = 0.02  # brightening at which colour_transform measures its luminance gain
DARK = 0.05  # added to brightness before grain is scaled by it: shadows keep some grain


@dataclass
class CompositeConfig:
    feather: float = 0.02  # low-band fade inside the selection, × crop side (≥ 2 gen. px)
    fine_feather: float = 3.0  # high-band transition width, px ...
    band_feather: float = 1.0  # ... at least this many generator px (H holds that scale)
    edge_eps: float | None = 0.01  # guide variance of a photo edge the fade may follow; None: blind
    lift_gain: tuple[float, float] = (0.7, 1.0)  # gain at R over which the fade follows edges
    change_low: float = 0.15  # |ρ| (channel mean, [-1, 1] units) up to which content stays
    change_high: float = 0.40  # |ρ| from which content counts as replaced
    change_blur: float = 1.0  # σ of the blur on |ρ|, generator px
    gain_low: float = 0.15  # luminance gain of the colour transform from which ...
    gain_high: float = 0.35  # ... to which content counts as replaced (texture flattened)
    grid: GridConfig = field(default_factory=GridConfig)  # the colour transform
    grain_levels: int | None = None  # octaves of grain from 1 px; None: ≤ 3, < a model px
    seed: int = 0  # grain noise


@dataclass
class Layers:
    """G′'s renderings at generator resolution covering a crop box, [1, 3, R, R] in [-1, 1]."""

    x: torch.Tensor  # the photo's crop at R
    edited: torch.Tensor  # G′(r_e)
    unedited: torch.Tensor  # G′(r), same fit
    free: torch.Tensor  # [1, 1, R, R] 1 − keep: where the edit may change anything


@dataclass
class Composite:
    image: np.ndarray  # same shape and dtype as the photo
    replaced: np.ndarray  # [y1−y0, x1−x0] float32 α·w_high in the window: content replaced
    window: Window  # where ``replaced`` lives; outside it nothing changed


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0, 1)
    return t * t * (3 - 2 * t)


def replaced_map(
    layers: Layers,
    cfg: CompositeConfig,
    explained: torch.Tensor | None = None,
    gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """α [1, 1, R, R] in [0, 1], inside the free zone only: 0 where the edit's change
    Δ = E − B is a colour change of the photo, 1 where G′ drew new content. ``explained``
    [1, 3, R, R] is the colour transform's change at R ([-1, 1] units; None: no transform,
    all of Δ counts) and ``gain`` [1, 1, R, R] its luminance gain. New content is what the
    transform leaves unexplained (the smoothed |Δ − explained|), and what it explains only
    by flattening the photo (gain near 0: the old texture would be erased, not recoloured)."""
    rho = layers.edited - layers.unedited
    if explained is not None:
        rho = rho - explained
    mag = rho.abs().mean(1, keepdim=True)
    mag = gaussian_blur(mag, cfg.change_blur) if cfg.change_blur > 0 else mag
    span = max(cfg.change_high - cfg.change_low, 1e-6)
    alpha = smoothstep((mag - cfg.change_low) / span)
    if gain is not None:
        flat = smoothstep((cfg.gain_high - gain) / max(cfg.gain_high - cfg.gain_low, 1e-6))
        alpha = torch.maximum(alpha, flat)
    return alpha * layers.free


def colour_transform(
    layers: Layers, cfg: CompositeConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The edit as a local colour transform of the photo (colour_grid.py), fitted at R from
    x to x + Δ: (grid, α [1, 1, R, R]: ``replaced_map`` of what it leaves unexplained, and
    the grid's luminance gain [1, 1, R, R] at x: d(luminance out) / d(luminance in)).
    Fitted twice: the second fit leaves out what the first could not explain (new content),
    which would otherwise pull the colour changes of its neighbours."""
    src = ((layers.x + 1) / 2).clamp(0, 1)
    dst = src + (layers.edited - layers.unedited) / 2
    res = src.shape[-1]
    weight = torch.ones_like(layers.free)
    for _ in range(2):
        grid = fit_grid(src, dst, weight, cfg.grid)
        explained = slice_grid(grid, src[0], res, (0, res), (0, res))[None]
        # d(luminance out)/d(luminance in), from a uniform brightening by GAIN_STEP
        bright = slice_grid(grid, src[0] + GAIN_STEP, res, (0, res), (0, res))[None]
        gain = 1 + (luminance(bright) - luminance(explained)) / GAIN_STEP
        alpha = replaced_map(layers, cfg, explained * 2, gain)
        weight = 1 - alpha
    return grid, alpha, gain


def replaced_share(layers: Layers, mask: torch.Tensor, cfg: CompositeConfig) -> float:
    """Share of the selection ``mask`` [1, 1, R, R] (in [0, 1]) that ``composite`` would
    draw anew (α of ``colour_transform``) rather than recolour, at R: what an edit is
    about to do, before the photo's resolution is touched."""
    _, alpha, _ = colour_transform(layers, cfg)
    m = mask.detach().float().cpu()
    return float((alpha * m).sum() / m.sum().clamp_min(1e-8))


def interp_matrix(res: int, size: int, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop of the [size, res] matrix A with A @ v = bicubic upsampling of v
    (exactly F.interpolate(mode="bicubic", align_corners=False), borders clamped). Dense:
    a BLAS product beats 4-tap gathers and a full-crop interpolate by 3–10× here."""
    eye = torch.eye(res).view(1, res, res, 1)
    a = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)[0, :, :, 0]
    return a.T[start:stop].contiguous()


def upsample_window(t: torch.Tensor, size: int, rows: tuple[int, int], cols: tuple[int, int]):
    """[1, C, R, R] -> [C, rows, cols]: the part of bicubic upsampling to size×size that lies
    in rows × cols (crop coordinates, clipped to the crop), without computing the rest."""
    res = t.shape[-1]
    r0, r1 = max(rows[0], 0), min(rows[1], size)
    c0, c1 = max(cols[0], 0), min(cols[1], size)
    ay, ax = interp_matrix(res, size, r0, r1), interp_matrix(res, size, c0, c1)
    out = ay @ t[0] @ ax.T
    # Rows/cols past the crop repeat the border (crop() repeats the photo's border too).
    pad = (c0 - cols[0], cols[1] - c1, r0 - rows[0], rows[1] - r1)
    return F.pad(out[None], pad, mode="replicate")[0] if any(pad) else out


def _erode1(t: torch.Tensor) -> torch.Tensor:
    """Grey erosion of [1, 1, H, W] by a 3×3 square (separable min of shifted slices); past
    the array's border counts as selected (an image border is no seam)."""
    p = F.pad(t, (1, 1, 1, 1), value=1.0)
    rows = torch.minimum(torch.minimum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return torch.minimum(torch.minimum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def feather_weights(mask: np.ndarray, radius: float) -> np.ndarray:
    """Blend weights in [0, 1], [H, W] float32: the selection faded inward over ~radius px.

    w = min(m, smoothstep(mean of the selection eroded by 1 … n px)): a ramp from 0 at the
    selection's edge (a change fades in instead of stepping up there) to 1 at ~radius
    inside; a soft (already feathered) selection is never exceeded, and w = 0 wherever
    m = 0. Large radii are computed at 1/f scale (a feather needs no per-pixel precision),
    so it costs little at any size.
    """
    m = mask.astype(np.float32) / 255.0
    if radius <= 0:
        return m
    t = torch.from_numpy(m)[None, None]
    f = max(1, math.ceil(radius / 8))
    small = F.avg_pool2d(t, f, ceil_mode=True) if f > 1 else t
    n = max(1, round(radius / f))
    acc, cur = torch.zeros_like(small), small
    for _ in range(n):
        cur = _erode1(cur)
        acc += cur
    ramp = smoothstep(acc / n)
    if f > 1:
        ramp = F.interpolate(ramp, scale_factor=f, mode="bilinear", align_corners=False)
        ramp = ramp[..., : m.shape[0], : m.shape[1]]
    return np.minimum(m, ramp[0, 0].numpy())


def _down2(t: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(t, 2, ceil_mode=True)


UP2_ROWS = 256  # output rows per strip of a large _up2 or _band


def _up2_strips(t: torch.Tensor, shape: tuple[int, ...]):
    """Bilinear ×2 of [N, C, h, w] cropped to ``shape``, as (o0, o1, rows o0..o1) strips,
    each from its input rows and one more either side: the same weights, the same bits."""
    for o0 in range(0, shape[0], UP2_ROWS):
        o1 = min(o0 + UP2_ROWS, shape[0])
        i0, i1 = max(o0 // 2 - 1, 0), min(o1 // 2 + 1, t.shape[-2])
        up = F.interpolate(t[..., i0:i1, :], scale_factor=2, mode="bilinear", align_corners=False)
        yield o0, o1, up[..., o0 - 2 * i0 : o1 - 2 * i0, : shape[1]]


def _up2(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Bilinear ×2 of [N, C, h, w], cropped to ``shape``; large ones in strips (no
    whole-size scratch memory), laid out as the one-piece result."""
    if shape[0] <= UP2_ROWS:
        up = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        return up[..., : shape[0], : shape[1]]
    cl = t.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    out = torch.empty(*t.shape[:2], *shape, dtype=t.dtype, memory_format=fmt)
    for o0, o1, strip in _up2_strips(t, shape):
        out[..., o0:o1, :] = strip
    return out


def _band(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Laplacian-pyramid step of [1, C, H, W]: (t − up(down t), down t). Large ones in
    strips; the band is laid out like ``t``, as t − up(…) is (reductions over it depend on
    that)."""
    low = _down2(t)
    shape = tuple(t.shape[-2:])
    if shape[0] <= UP2_ROWS:
        return t - _up2(low, shape), low
    band = torch.empty_like(t)
    for o0, o1, strip in _up2_strips(low, shape):
        torch.sub(t[..., o0:o1, :], strip, out=band[..., o0:o1, :])
    return band, low


# Trimmed colour covariance: pixels whose band vector is in the top 20 % of squared length
# are left out; for Gaussian grain (3 channels, χ²₃) the rest has 0.674 of the full variance,
# so dividing by it measures grain at its full strength while edges drop out.
TRIM, TRIMMED_VAR = 0.8, 0.674


def _cov_factor(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cholesky factor [3, 3] of the colour covariance of grain in v [3, N] (weight [N]).

    Robust: a photo's edges and structure (the band's largest 20 %) would otherwise pass
    for very strong grain."""
    sq = v.pow(2).sum(0)
    sample = sq[weight > 0.5]
    if sample.numel() >= 16:
        t = sample.kthvalue(max(1, int(TRIM * sample.numel()))).values
        weight = weight * (sq <= t)
    wsum = weight.sum().clamp_min(1e-8)
    d = v - (v * weight).sum(1, keepdim=True) / wsum
    cov = ((d * weight) @ d.T / wsum).double() / TRIMMED_VAR
    return torch.linalg.cholesky(cov + 1e-12 * torch.eye(3, dtype=torch.float64)).float()


def grain(photo: torch.Tensor, weight: torch.Tensor, levels: int, seed: int) -> torch.Tensor:
    """Noise [3, h, w] with the photo's energy and colour covariance in each octave band.

    photo: [3, h, w] in [0, 1]; weight: [h, w] where to measure it (content that stays);
    levels: octaves from the finest (1 px) up. Each band of a Laplacian pyramid of the photo
    gives a 3×3 colour covariance that shapes white noise at that octave's scale; the
    octaves are summed back (bilinear): the photo's grain and texture energy per scale,
    none of its structure. White noise at each scale, not band-passed, keeps it cheap.
    """
    g = torch.Generator().manual_seed(seed)
    cur, w = photo[None], weight[None, None]
    del photo  # the finest level goes as soon as its band is taken (when the caller let go)
    if float(w.sum()) < 16:  # nothing kept to measure: the whole window
        w = torch.ones_like(w)
    bands = []
    for _ in range(max(1, levels)):
        band, cur = _band(cur)
        # A statistic needs no megapixels: every k-th row and column, ≤ ~250 k pixels.
        k = max(1, math.ceil(math.sqrt(band.shape[-1] * band.shape[-2] / 250_000)))
        chol = _cov_factor(band[0, :, ::k, ::k].flatten(1), w[0, 0, ::k, ::k].flatten())
        shape = band.shape
        del band
        bands.append(torch.einsum("ij,bjyx->biyx", chol, torch.randn(shape, generator=g)))
        w = _down2(w)
        if min(cur.shape[-2:]) < 4:
            break
    out = bands.pop()
    while bands:  # each finer band plus the coarser sum enlarged, added into the band
        finer = bands.pop()
        for o0, o1, strip in _up2_strips(out, tuple(finer.shape[-2:])):
            finer[..., o0:o1, :].add_(strip)
        out = finer
    return out[0]


def _edge_aware(
    photo: np.ndarray, mask: np.ndarray, win: Window, fade: torch.Tensor, radius: float, eps: float
) -> torch.Tensor:
    """guided.edge_aware_fade of ``fade`` [y1−y0, x1−x0] in the window ``win``, with the
    photo around it as context: the filter must see what lies outside the selection."""
    y0, y1, x0, x1 = win
    c = math.ceil(radius / 2) + 2
    h, w = mask.shape
    gy0, gy1, gx0, gx1 = max(y0 - c, 0), min(y1 + c, h), max(x0 - c, 0), min(x1 + c, w)
    top = DTYPE_MAX[photo.dtype]
    guide = torch.from_numpy(photo[gy0:gy1, gx0:gx1, :3].astype(np.float32)).permute(2, 0, 1)
    sel = torch.from_numpy(mask[gy0:gy1, gx0:gx1].astype(np.float32) / 255.0)
    inner = (slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0))
    big = torch.zeros_like(sel)
    big[inner] = fade
    return edge_aware_fade(big, sel, guide.div_(top), radius, eps)[inner].contiguous()


def composite(
    photo: np.ndarray,
    mask: np.ndarray | None,
    box: Box,
    layers: Layers,
    cfg: CompositeConfig | None = None,
    replace: bool = True,
) -> Composite:
    """The edit at the photo's resolution; see the module docstring.

    photo: [H, W, C]; mask: [H, W] uint8 (None = the whole frame, unfeathered: reconstruct);
    box: the crop the layers cover. replace=False keeps α = 0 (only up(Δ) is added).
    """
    cfg = cfg or CompositeConfig()
    h, w = photo.shape[:2]
    size, res = box.size, layers.x.shape[-1]
    r_low = max(cfg.feather * size, 2 * size / res)
    if mask is None:
        win: Window | None = (0, h, 0, w)
    else:
        win = mask_window(mask)
    if win is None:
        return Composite(photo.copy(), np.zeros((0, 0), np.float32), (0, 0, 0, 0))
    # One pixel of unselected margin (f px at a feather's reduced scale) lets the feathers
    # see the selection's edge as an edge; past the image border counts as selected.
    grow = math.ceil(r_low / 8) + 2
    y0, y1 = max(win[0] - grow, 0), min(win[1] + grow, h)
    x0, x1 = max(win[2] - grow, 0), min(win[3] + grow, w)
    top = DTYPE_MAX[photo.dtype]

    # Whole-window arrays are the memory of a large selection (8192×2048 × 3 float32 = 192
    # MiB each): below, operations work in place where that gives the same bits, and the
    # photo's window is read again rather than kept while the grain is made.
    def window() -> torch.Tensor:  # [3, h, w] float32 in [0, 1], a view of an [h, w, 3] array
        src = photo[y0:y1, x0:x1, :3].astype(np.float32)
        return torch.from_numpy(src).permute(2, 0, 1).div_(top)

    rows, cols = (y0 - box.y0, y1 - box.y0), (x0 - box.x0, x1 - box.x0)

    def up(t: torch.Tensor) -> torch.Tensor:  # [1, C, R, R] -> [C, y1−y0, x1−x0]
        return upsample_window(t, size, rows, cols)

    e, b, x, free = (
        t.detach().float().cpu() for t in (layers.edited, layers.unedited, layers.x, layers.free)
    )
    grid = None
    if replace:
        grid, alpha, gain = colour_transform(Layers(x, e, b, free), cfg)
    else:
        alpha = torch.zeros_like(free)
    w_colour = None  # the colour change's fade where it differs from the low band's
    if mask is None:
        w_low = w_high = torch.ones(y1 - y0, x1 - x0)
    else:
        m = mask[y0:y1, x0:x1]
        w_low = torch.from_numpy(feather_weights(m, r_low))
        if cfg.edge_eps is not None and replace:
            w_colour = _edge_aware(photo, mask, (y0, y1, x0, x1), w_low, r_low, cfg.edge_eps)
        # The high band switches where the low band is half way (as in multi-band blending:
        # one boundary, a narrow transition for fine bands); switching it sooner would leave
        # a rim of the photo's low band without its detail, a blurred glow.
        k = max(1.0, r_low / max(cfg.fine_feather, size / res * cfg.band_feather, 1e-3))
        w_high = smoothstep((w_low - 0.5) * k + 0.5)
    a_low = up(alpha)[0].clamp_(0, 1)
    a_up = a_low * w_high
    del w_high
    detail = None  # (cos θ − 1)·H + sin θ·N where content is replaced (made before `out`)
    if replace and bool((a_up > 1e-4).any()):
        levels = cfg.grain_levels or min(3, max(1, int(math.log2(max(size / res, 1.0)))))
        # Grain grows with brightness like shot noise (std ∝ √level): measured relative to
        # the photo's local level, re-applied relative to the new content's.
        level = up((x + 1) / 2).clamp_min_(0).add_(DARK).sqrt_()
        # Handed over in a list so that no name holds it: grain frees it after one octave.
        measured = [window().div(level)]
        del level
        noise = grain(measured.pop(), 1 - a_up, levels, cfg.seed)
        noise *= up((e + 1) / 2).clamp_min_(0).add_(DARK).sqrt_()
        theta = a_up * (math.pi / 2)
        noise *= torch.sin(theta)
        p = window()
        detail = torch.sub(p, up((x + 1) / 2), out=p)  # H: the photo's band above G's res.
        del p
        detail *= torch.cos(theta).sub_(1)
        del theta
        detail.add_(noise)
        del noise
    # Changes in [0, 1] units: half of the [-1, 1] ones. p + w_low·(change), then the detail.
    if grid is None:  # reconstruct: G′'s difference from the photo in its band
        out = up((e - b) * free / 2).mul_(w_low).add_(window())
    else:  # the colour transform where content stays, G′'s rendering where it is replaced
        p = window()
        change = slice_grid(grid, p, size, rows, cols)
        if is_neutral((x + 1) / 2, cfg.grid):  # a black-and-white photo stays so
            change = luminance(change[None])[0].expand(3, -1, -1).contiguous()
        change.mul_(1 - a_low)
        if w_colour is not None:  # the colour change follows the photo's edges ...
            # ... where the transform keeps the photo's tonal contrast (gain near 1): in a
            # cell that mixes hair with wall or skin it flattens the tones between them
            lo, hi = cfg.lift_gain
            trust = up(smoothstep((gain - lo) / (hi - lo)))[0].clamp_(0, 1)
            w_colour = torch.lerp(w_low, w_colour, trust)
            change.mul_(w_colour)
            del w_colour, trust
            out = up(alpha * (e - x) * free / 2).mul_(w_low).add_(change).add_(p)
        else:  # ... new content fades in as the selection does
            out = change.add_(up(alpha * (e - x) * free / 2)).mul_(w_low).add_(p)
        del change, p
    del w_low, a_low
    if detail is not None:
        out += detail
        del detail
    new = out.mul_(top).round_().clamp_(0, top).permute(1, 2, 0).numpy().astype(photo.dtype)
    del out
    image = photo.copy()
    sel = np.ones(new.shape[:2], bool) if mask is None else mask[y0:y1, x0:x1] > 0
    np.copyto(image[y0:y1, x0:x1, :3], new, where=sel[..., None])
    return Composite(image, a_up.numpy(), (y0, y1, x0, x1))
