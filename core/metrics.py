"""Image quality numbers used in reports and progress."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .blur import gaussian_blur
from .photo import mask_window


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


# -- at the photo's resolution (numpy [H, W, C] uint8/uint16 photos, [H, W] masks) ------------
# Large selections are measured in strips of rows: whole-frame float64 copies of an 8192×2048
# photo would take ~1 GB at once. An image of one strip is measured in one piece.
STRIP_ROWS = 256


def _strips(rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + STRIP_ROWS, rows)) for a in range(0, rows, STRIP_ROWS)]


def _luma(img: np.ndarray) -> np.ndarray:
    """[H, W] float64 mean of the RGB channels, scaled to [0, 1] by the dtype's range."""
    top = 65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0
    return img[..., :3].astype(np.float64).mean(-1) / top


def psnr_photo(result: np.ndarray, photo: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB of result against photo over the pixels where ``where`` ([H, W] bool) is
    True, RGB channels, peak = the dtype's maximum. inf when identical, nan when empty."""
    if not where.any():
        return float("nan")
    top = 65535.0 if photo.dtype == np.uint16 else 255.0
    total, count = 0.0, 0
    for a, b in _strips(where.shape[0]):
        w = where[a:b]
        d = result[a:b][w][:, :3].astype(np.float64) - photo[a:b][w][:, :3].astype(np.float64)
        total, count = total + float((d * d).sum()), count + d.size
    mse = total / count
    return float("inf") if mse <= 0 else 10.0 * math.log10(top * top / mse)


def laplacian(img: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of the luma, [H−2, W−2] (interior pixels only)."""
    y = _luma(img)
    return y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]


def detail_ratio(result: np.ndarray, photo: np.ndarray, where: np.ndarray) -> float:
    """Variance of the Laplacian over ``where``, result ÷ photo: 1 keeps the photo's detail,
    → 0 is a blurred patch, > 1 adds texture/noise. nan when empty or the photo is flat."""
    inner = where[1:-1, 1:-1]
    if not inner.any():
        return float("nan")
    a, b = _laplacian_var(result, inner), _laplacian_var(photo, inner)
    return float(a / b) if b > 0 else float("nan")


def _laplacian_var(img: np.ndarray, inner: np.ndarray) -> float:
    """laplacian(img)[inner].var(), by strips of rows (two passes: mean, then deviations)."""
    strips = _strips(inner.shape[0])
    if len(strips) == 1:
        return float(laplacian(img)[inner].var())

    def values(a: int, b: int) -> np.ndarray:  # Laplacian rows a..b need image rows a..b+2
        return laplacian(img[a : b + 2])[inner[a:b]]

    n = int(inner.sum())
    mean = sum(float(values(a, b).sum()) for a, b in strips) / n
    return sum(float(((values(a, b) - mean) ** 2).sum()) for a, b in strips) / n


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of [H, W] bool by a (2r+1)² square (separable max)."""
    out = m.copy()
    for axis in (0, 1):
        acc = out.copy()
        for s in range(1, r + 1):
            fwd = np.zeros_like(out)
            bwd = np.zeros_like(out)
            if axis == 0:
                fwd[s:], bwd[:-s] = out[:-s], out[s:]
            else:
                fwd[:, s:], bwd[:, :-s] = out[:, :-s], out[:, s:]
            acc |= fwd | bwd
        out = acc
    return out


def edge_band(selected: np.ndarray, width: int = 6) -> np.ndarray:
    """[H, W] bool: pixels within width/2 px of the selection's edge, on either side."""
    r = max(1, width // 2)
    return _dilate(selected, r) & _dilate(~selected, r)


def gradient_energy(img: np.ndarray, where: np.ndarray) -> float:
    """Σ over ``where`` of |∇luma|² (forward differences, pixels whose both neighbours exist)."""
    total = 0.0
    for a, b in _strips(img.shape[0] - 1):  # difference rows a..b need image rows a..b+1
        y = _luma(img[a : b + 1])
        gy, gx = y[1:, :-1] - y[:-1, :-1], y[:-1, 1:] - y[:-1, :-1]
        total += float(((gx * gx + gy * gy) * where[a:b, :-1]).sum())
    return total


def edge_gradient_ratio(
    result: np.ndarray, photo: np.ndarray, selected: np.ndarray, width: int = 6
) -> float:
    """Gradient energy in the selection's edge band, result ÷ photo: ≈ 1 without a seam; a
    visible seam adds energy (> 1), a blurred edge removes it (< 1)."""
    band = edge_band(selected, width)
    b = gradient_energy(photo, band)
    return gradient_energy(result, band) / b if b > 0 else float("nan")


def fine_structure(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """[H, W] float32: the luma's Laplacian of Gaussian (σ px): the photo's fine structure
    (strands, pores, grain) without its shading."""
    lum = torch.from_numpy(_luma(img).astype(np.float32))[None, None]
    blur = gaussian_blur(lum, sigma)
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(F.pad(blur, (1, 1, 1, 1), mode="replicate"), lap)[0, 0].numpy()


def structure_correlation(result: np.ndarray, photo: np.ndarray, where: np.ndarray) -> float:
    """Correlation of the result's fine structure (``fine_structure``) with the photo's over
    ``where``: 1 keeps every strand, ≈ 0 is a smear or structure of its own (synthetic grain
    adds detail but not this correlation). nan when empty or flat."""
    if where.sum() < 2:
        return float("nan")
    a, b = fine_structure(result)[where], fine_structure(photo)[where]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def cielab(img: np.ndarray) -> np.ndarray:
    """[..., 3|4] sRGB uint8/uint16 -> [..., 3] float64 CIELab (D65)."""
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    c = img[..., :3].astype(np.float64) / top
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ SRGB_TO_XYZ.T / D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
)
D65 = np.array([0.95047, 1.0, 1.08883])


def chroma_spread(img: np.ndarray, where: np.ndarray) -> float:
    """Mean distance in (a*, b*) from the region's mean chroma: blotches of colour raise it."""
    ab = cielab(img[where])[:, 1:]
    return float(np.hypot(*(ab - ab.mean(0)).T).mean()) if len(ab) else float("nan")


def relative_structure(img: np.ndarray) -> np.ndarray:
    """[H, W] float32: fine-structure energy relative to the local brightness (the LoG's square
    over the squared local mean luma, σ = 4 px): a tone change leaves it as it was, a smear
    lowers it, grain raises it."""
    return fine_structure(img) ** 2 / _brightness(img)


def _brightness(img: np.ndarray) -> np.ndarray:
    """[H, W]: the squared local mean luma (σ = 4 px) that relative_structure divides by."""
    lum = torch.from_numpy(_luma(img).astype(np.float32))[None, None]
    return (gaussian_blur(lum, 4.0)[0, 0].numpy() + 0.02) ** 2


def seam_steps(
    photo: np.ndarray,
    result: np.ndarray,
    boundary: np.ndarray,
    width: int = 8,
    within: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> tuple[float, float]:
    """How much colour and texture step across a boundary ([H, W] bool: the pixels on one
    side), compared with the photo's own: (colour, texture).

    colour: the largest CIELab ΔE between the mean change (result − photo) just inside and
    just outside, over windows of 2·``width`` px along the boundary (the two sides' pixels
    lie about ``width`` px apart): a change that jumps at the boundary gives its full size,
    one that fades in over F px about its size × width / F. texture: the largest |log2| of
    (relative fine-structure energy, result ÷ photo, inside) ÷ (the same, outside) over those
    windows (``relative_structure``): 0 when both sides keep as much of the photo's texture,
    1 when one side has twice the other's. ``within``: only windows whose outside pixels all
    lie in it (e.g. a boundary inside the selection, away from its edge). ``reference``
    ([H, W, 3], e.g. the generator's rendering enlarged): where new content is drawn, its own
    edges step too; the colour step then counts only what exceeds the reference's change's
    step there (a seam is an edge that neither the photo nor the new content has)."""
    inner = boundary & ~_dilate(~boundary, width // 2)
    outer = _dilate(boundary, width) & ~_dilate(boundary, width // 2)
    if not inner.any() or not outer.any():
        return float("nan"), float("nan")
    change = cielab(result) - cielab(photo)
    drawn = None if reference is None else cielab(reference) - cielab(photo)
    fr, fp = relative_structure(result), relative_structure(photo)
    # Floors: a tenth of the photo's mean texture by the boundary, and per window the
    # relative energy of a one-level (1/255) structure there: on a flat wall or a clipped
    # black the ratio of two near-zero energies says nothing anyone can see.
    floor = 0.1 * float(fp[inner | outer].mean()) + 1e-12
    one_level = (1 / 255) ** 2 / _brightness(photo)
    # Windows centred on the boundary: one edge pixel per 2·width square cell.
    edge = boundary & _dilate(~boundary, 1)
    ys, xs = np.nonzero(edge)
    cells = (ys // (2 * width)) * (edge.shape[1] // (2 * width) + 1) + xs // (2 * width)
    _, first = np.unique(cells, return_index=True)
    colour, texture = float("nan"), float("nan")
    for y, x in zip(ys[first], xs[first], strict=True):
        sl = (slice(max(y - width, 0), y + width), slice(max(x - width, 0), x + width))
        i, o = inner[sl], outer[sl]
        if i.sum() < width or o.sum() < width or (within is not None and not within[sl][o].all()):
            continue
        step = float(np.sqrt(((change[sl][i].mean(0) - change[sl][o].mean(0)) ** 2).sum()))
        if drawn is not None:
            own = drawn[sl][i].mean(0) - drawn[sl][o].mean(0)
            step = max(0.0, step - float(np.sqrt((own**2).sum())))
        colour = np.nanmax([colour, step])
        low = max(floor, float(one_level[sl].mean()))
        ri = (fr[sl][i].mean() + low) / (fp[sl][i].mean() + low)
        ro = (fr[sl][o].mean() + low) / (fp[sl][o].mean() + low)
        texture = np.nanmax([texture, abs(math.log2(ri / ro))])
    return float(colour), float(texture)


def in_frame(values: np.ndarray, window: tuple[int, int, int, int], shape) -> np.ndarray:
    """A window's map ([y1−y0, x1−x0], e.g. the composite's ``replaced``) placed in a
    zero [H, W] float32 frame of ``shape``."""
    out = np.zeros(shape[:2], np.float32)
    y0, y1, x0, x1 = window
    if values.size:
        out[y0:y1, x0:x1] = values
    return out


def photo_metrics(
    photo: np.ndarray,
    result: np.ndarray,
    mask: np.ndarray,
    replaced: np.ndarray | None = None,
    window: tuple[int, int, int, int] | None = None,
    kept_below: float = 0.1,
) -> dict[str, float]:
    """The photo-resolution numbers of one edit.

    selected = mask ≥ 128. replaced: [y1−y0, x1−x0] in [0, 1] on ``window`` (the composite's
    "content replaced" map), None = nothing replaced. Returns psnr_inside and detail_ratio
    over the selection; psnr_kept and detail_ratio_kept where replaced < kept_below (the
    content the edit leaves as it was); edge_gradient_ratio over the 6 px edge band;
    structure_correlation over the selection; replaced_fraction of the selection.
    """
    sel_all = mask >= 128
    win = mask_window(sel_all, 8)
    if win is None:
        nan = float("nan")
        return dict.fromkeys(
            ("psnr_inside", "psnr_kept", "detail_ratio", "detail_ratio_kept"), nan
        ) | {"edge_gradient_ratio": nan, "structure_correlation": nan, "replaced_fraction": 0.0}
    y0, y1, x0, x1 = win
    p, r, sel = photo[y0:y1, x0:x1], result[y0:y1, x0:x1], sel_all[y0:y1, x0:x1]
    rep = np.zeros(sel.shape, np.float32)
    if replaced is not None and window is not None and replaced.size:
        wy0, wy1, wx0, wx1 = window
        oy0, oy1, ox0, ox1 = max(wy0, y0), min(wy1, y1), max(wx0, x0), min(wx1, x1)
        if oy1 > oy0 and ox1 > ox0:
            rep[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = replaced[
                oy0 - wy0 : oy1 - wy0, ox0 - wx0 : ox1 - wx0
            ]
    kept = sel & (rep < kept_below)
    if kept.sum() < 0.01 * sel.sum():  # a rim of kept pixels says nothing: no number
        kept[:] = False
    return {
        "psnr_inside": psnr_photo(r, p, sel),
        "psnr_kept": psnr_photo(r, p, kept),
        "detail_ratio": detail_ratio(r, p, sel),
        "detail_ratio_kept": detail_ratio(r, p, kept),
        "edge_gradient_ratio": edge_gradient_ratio(r, p, sel),
        "structure_correlation": structure_correlation(r, p, sel),
        "replaced_fraction": float(rep[sel].mean()) if sel.any() else 0.0,
    }
