"""An image → latent encoder E for any layered generator, trained on G's own samples.

The paper's inversion starts from E(x) and then optimises; without E we need many random
starts and hundreds of steps. E is a small conv net (stride-2 blocks down to 4×4, then a
linear layer to the latent), trained on pairs (z, G(z)) drawn fresh every step, so there is
no data set and no over-fitting to one. Loss: the pixel loss of the inversion (L1 + MSE of
G(E(x')) against the target) plus a latent term ‖E(x) − z‖² on un-transformed samples.

Augmentations (``augment``) are what make E work on real photos rather than on G's samples
only; each stands for one way a real crop differs from a sample:
- geometry (shift ±8 %, scale 0.85–1.15, rotation ±5°, mirror): the user's selection puts the
  face anywhere in the crop, at any size;
- new backgrounds (zoom-out filled with another sample): a photo's surroundings are not G's;
- colour (brightness, contrast, saturation, white balance): photos are graded differently;
- degradations (blur, down/up-sampling, JPEG 8×8 quantisation, sensor noise): a crop resized
  to the generator's resolution has other sharpness, block artefacts and noise than G's output.
Geometry and colour change the *target* too (G should reproduce the transformed image as
well as it can); degradations change only the input (E should see through them). The latent
term is only applied where the target is G(z) itself.

Weights of the shipped encoder: an exponential moving average of the trained weights (usable
whenever training stops), the one with the best PSNR on a fixed validation set of augmented
samples. Real photos are never seen in training or selection: they are the held-out test.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .generators.base import LayeredGenerator, ModelError

FORMAT = "ganpaint-encoder/1"


# -- the network ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderArch:
    resolution: int  # input side, the generator's resolution (a power of two ≥ 8)
    latent_dim: int  # prod(G.latent_shape)
    width: int = 32  # channels after the first block; doubled per block up to max_width
    max_width: int = 256


def _block(cin: int, cout: int) -> nn.Sequential:
    # A 4×4 stride-2 conv halves the side; a 3×3 conv adds depth at that scale. GroupNorm
    # (not BatchNorm): E runs on one photo at a time, and batch statistics would differ.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, 2, 1),
        nn.GroupNorm(min(8, cout), cout),
        nn.LeakyReLU(0.2),
        nn.Conv2d(cout, cout, 3, 1, 1),
        nn.GroupNorm(min(8, cout), cout),
        nn.LeakyReLU(0.2),
    )


class ImageEncoder(nn.Module):
    """x [B, 3, R, R] in [-1, 1] → z [B, latent_dim]."""

    def __init__(self, arch: EncoderArch):
        super().__init__()
        r = arch.resolution
        if r < 8 or r & (r - 1):
            raise ValueError(f"encoder resolution must be a power of two ≥ 8, not {r}")
        self.arch = arch
        blocks, cin, side = [], 3, r
        for i in range(int(math.log2(r)) - 2):  # down to 4×4
            cout = min(arch.width * 2**i, arch.max_width)
            blocks.append(_block(cin, cout))
            cin, side = cout, side // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(cin * side * side, arch.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


# -- augmentations -------------------------------------------------------------------------
@dataclass
class AugmentConfig:
    clean_fraction: float = 0.25  # samples left as G made them (they get the latent loss)
    shift: float = 0.08  # of the half side
    scale: tuple[float, float] = (0.85, 1.15)
    rotate_deg: float = 5.0
    background_p: float = 0.3  # zoom-outs filled with another sample instead of reflection
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.25)
    saturation: tuple[float, float] = (0.7, 1.3)
    gain: float = 0.07  # per-channel white-balance gain ±
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    resample_p: float = 0.2
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)
    noise_p: float = 0.5
    noise_sigma: float = 0.04


def _u(n: int, lo: float, hi: float, rng: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=rng) * (hi - lo) + lo


def _chance(n: int, p: float, rng: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=rng) < p


def _geometry(x: torch.Tensor, on: torch.Tensor, cfg: AugmentConfig, rng: torch.Generator):
    """Random similarity transform (+ mirror) of the samples where ``on``; [B,3,R,R]."""
    b = x.shape[0]
    s = _u(b, *cfg.scale, rng)
    a = _u(b, -cfg.rotate_deg, cfg.rotate_deg, rng) * math.pi / 180
    t = _u(2 * b, -cfg.shift, cfg.shift, rng).view(b, 2)
    flip = torch.where(_chance(b, 0.5, rng), -1.0, 1.0)
    on = on.float()  # transformed where on, identity elsewhere
    s, a, flip = 1 + (s - 1) * on, a * on, 1 + (flip - 1) * on
    t = t * on[:, None]
    # affine_grid maps output coords to input coords: scale 1/s zooms in when s > 1.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = flip * torch.cos(a) / s
    theta[:, 0, 1] = -torch.sin(a) / s
    theta[:, 1, 0] = flip * torch.sin(a) / s
    theta[:, 1, 1] = torch.cos(a) / s
    theta[:, :, 2] = t
    theta = theta.to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    inside = F.grid_sample(
        torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    other = x.roll(1, 0).flip(-1)  # another sample of the batch, as a new background
    bg = _chance(b, cfg.background_p, rng).to(x.device).view(b, 1, 1, 1)
    filled = out * inside + other * (1 - inside)
    return torch.where(bg, filled, out)


def _colour(x: torch.Tensor, cfg: AugmentConfig, rng: torch.Generator) -> torch.Tensor:
    b, dev = x.shape[0], x.device

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(dev).view(b, 1, 1, 1)

    grey = x.mean(1, keepdim=True)
    x = grey + per(_u(b, *cfg.saturation, rng)) * (x - grey)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + per(_u(b, *cfg.contrast, rng)) * (x - mean)
    gain = _u(3 * b, 1 - cfg.gain, 1 + cfg.gain, rng).to(dev).view(b, 3, 1, 1)
    x = (x + 1) * gain - 1 + per(_u(b, -cfg.brightness, cfg.brightness, rng))
    return x.clamp(-1, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample σ (pixels); [B,3,R,R]."""
    b, c = x.shape[:2]
    k = torch.arange(-3, 4, dtype=x.dtype, device=x.device)
    w = torch.exp(-(k[None] ** 2) / (2 * sigma.to(x.device)[:, None] ** 2))
    w = (w / w.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, 7]
    y = F.pad(x.reshape(1, b * c, *x.shape[2:]), (3, 3, 3, 3), mode="reflect")
    y = F.conv2d(y, w.view(b * c, 1, 1, 7), groups=b * c)
    y = F.conv2d(y, w.view(b * c, 1, 7, 1), groups=b * c)
    return y.view_as(x)


# JPEG's example quantisation tables (ITU-T T.81 Annex K), luminance and chrominance.
_QY = """16 11 10 16 24 40 51 61 12 12 14 19 26 58 60 55 14 13 16 24 40 57 69 56
14 17 22 29 51 87 80 62 18 22 37 56 68 109 103 77 24 35 55 64 81 104 113 92
49 64 78 87 103 121 120 101 72 92 95 98 112 100 103 99"""
_QC = "17 18 24 47 99 99 99 99 18 21 26 66 99 99 99 99 24 26 56 99 99 99 99 99 47 66" + " 99" * 38


def _dct8(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    n = torch.arange(8, dtype=dtype, device=device)
    d = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d  # orthonormal DCT-II: rows are frequencies


def jpeg_like(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Round 8×8 block DCT coefficients of YCbCr as JPEG does at ``quality`` (per sample,
    1–100); [B,3,R,R] in [-1,1], R a multiple of 8. No chroma subsampling, no entropy coding
    (they do not change pixels beyond what the rounding does)."""
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    m = torch.tensor(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
        device=dev,
        dtype=dt,
    )
    ycc = torch.einsum("ij,bjhw->bihw", m, (x + 1) * 127.5)
    ycc[:, 0] -= 128
    q = quality.to(dev, dt).clamp(1, 100)
    scale = torch.where(q < 50, 50 / q, 2 - q / 50).view(b, 1, 1, 1)  # IJG's quality scaling
    tables = torch.tensor(
        [[float(v) for v in t.split()] for t in (_QY, _QC, _QC)], device=dev, dtype=dt
    ).view(1, 3, 8, 8)
    step = (tables * scale).clamp(min=1)[:, :, None, :, None, :]  # [B,3,1,8,1,8]
    d = _dct8(dev, dt)
    blocks = ycc.view(b, 3, h // 8, 8, w // 8, 8)
    coef = torch.einsum("ui,bcyixj,vj->bcyuxv", d, blocks, d)
    coef = torch.round(coef / step) * step
    back = torch.einsum("ui,bcyuxv,vj->bcyixj", d, coef, d).reshape(b, 3, h, w)
    back[:, 0] += 128
    rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), back)
    return (rgb / 127.5 - 1).clamp(-1, 1)


def augment(
    x: torch.Tensor, cfg: AugmentConfig, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G's samples x [B,3,R,R] → (input [B,3,R,R], target [B,3,R,R], clean [B] bool).

    Random numbers come from ``rng`` (CPU), so a run is reproducible on any device.
    """
    b, r = x.shape[0], x.shape[-1]
    dev = x.device
    clean = _chance(b, cfg.clean_fraction, rng)
    target = _geometry(x, ~clean, cfg, rng)
    target = torch.where(clean.to(dev).view(b, 1, 1, 1), x, _colour(target, cfg, rng))
    inp = target

    def where(p: float) -> torch.Tensor:
        return _chance(b, p, rng).to(dev).view(b, 1, 1, 1)

    inp = torch.where(where(cfg.blur_p), _blur(inp, _u(b, *cfg.blur_sigma, rng)), inp)
    f = float(_u(1, 1.5, 2.0, rng))
    small = F.interpolate(inp, size=max(4, int(r / f)), mode="bilinear", antialias=True)
    resampled = F.interpolate(small, size=r, mode="bilinear", align_corners=False)
    inp = torch.where(where(cfg.resample_p), resampled, inp)
    if r % 8 == 0:
        quality = _u(b, *cfg.jpeg_quality, rng)
        inp = torch.where(where(cfg.jpeg_p), jpeg_like(inp, quality), inp)
    sigma = (_u(b, 0, cfg.noise_sigma, rng) * _chance(b, cfg.noise_p, rng)).to(dev)
    inp = inp + sigma.view(b, 1, 1, 1) * torch.randn(inp.shape, generator=rng).to(dev)
    return inp.clamp(-1, 1), target, clean.to(dev)


# -- training ------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    steps: int = 20000
    batch: int = 32
    lr: float = 1e-3
    ema: float = 0.999  # weight averaging: the averaged weights are good whenever we stop
    latent_weight: float = 0.1  # ‖E(x) − z‖² on clean samples, next to the pixel loss
    width: int = 32
    max_width: int = 256
    seed: int = 0
    val_size: int = 128
    val_every: int = 250
    checkpoint_s: float = 180.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainState:
    step: int
    loss: float
    val_psnr: float | None
    best_psnr: float
    steps_per_s: float


def pixel_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE per sample (the inversion's loss): [B]."""
    d = out - x
    return d.abs().mean(dim=(1, 2, 3)) + d.pow(2).mean(dim=(1, 2, 3))


def _psnr_batch(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def _val_set(gen: LayeredGenerator, cfg: TrainConfig):
    rng = torch.Generator().manual_seed(cfg.seed + 1_000_003)  # disjoint from training draws
    with torch.no_grad():
        z = gen.sample_latent(cfg.val_size, rng)
        inp, target, _ = augment(gen(z), cfg.augment, rng)
    return inp, target


def evaluate(enc: ImageEncoder, gen: LayeredGenerator, inp: torch.Tensor, target: torch.Tensor):
    """Mean PSNR (dB) of G(E(input)) against target, in batches of 32."""
    enc.eval()
    vals = []
    with torch.no_grad():
        for i in range(0, inp.shape[0], 32):
            z = enc(inp[i : i + 32]).view(-1, *gen.latent_shape)
            vals.append(_psnr_batch(gen(z), target[i : i + 32]) * z.shape[0])
    return sum(vals) / inp.shape[0]


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_state(
    enc: ImageEncoder, model_id: str, meta: dict, half: bool = True
) -> dict[str, object]:
    """The small shipping file's content: fp16 weights, the architecture, and provenance."""
    sd = {
        k: (v.half() if half and v.is_floating_point() else v).cpu()
        for k, v in enc.state_dict().items()
    }
    return {
        "format": FORMAT,
        "model_id": model_id,
        "arch": asdict(enc.arch),
        "state_dict": sd,
        "meta": meta,
    }


def train(
    gen: LayeredGenerator,
    cfg: TrainConfig,
    out_dir: Path,
    meta: dict | None = None,
    progress: Callable[[TrainState], None] | None = None,
    stop_at: float | None = None,
) -> TrainState:
    """Train (or resume) an encoder for ``gen``; writes ``out_dir/last.pt`` (resumable, every
    ``checkpoint_s`` seconds and at the end) and ``out_dir/encoder.pt`` (the best EMA weights,
    fp16, with ``meta``). ``stop_at``: a time.time() at which to checkpoint and return early.
    A resumed run continues the same random stream, so it equals an uninterrupted one up to
    the checkpoint's step."""
    dev = next(gen.parameters()).device
    out_dir = Path(out_dir)
    last, best_path = out_dir / "last.pt", out_dir / "encoder.pt"
    arch = EncoderArch(gen.resolution, math.prod(gen.latent_shape), cfg.width, cfg.max_width)
    torch.manual_seed(cfg.seed)
    enc = ImageEncoder(arch).to(dev)
    ema = copy.deepcopy(enc).requires_grad_(False)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(cfg.seed)
    step, best, history = 0, -math.inf, []
    if last.is_file():
        ck = torch.load(last, map_location=dev, weights_only=False)
        if ck["arch"] != asdict(arch) or ck["model_id"] != gen.model_id:
            raise ModelError(f"{last} is for another model or architecture; use a new --out")
        enc.load_state_dict(ck["encoder"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        rng.set_state(ck["rng"])
        step, best, history = ck["step"], ck["best_psnr"], ck["history"]
    val_inp, val_target = _val_set(gen, cfg)
    meta = dict(meta or {})

    def save() -> None:
        _atomic_save(
            {
                "model_id": gen.model_id,
                "arch": asdict(arch),
                "config": asdict(cfg),
                "encoder": enc.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "rng": rng.get_state(),
                "step": step,
                "best_psnr": best,
                "history": history,
            },
            last,
        )

    t_save = t0 = time.time()
    s0, loss_avg, val = step, 0.0, None
    while step < cfg.steps:
        enc.train()
        with torch.no_grad():
            z = gen.sample_latent(cfg.batch, rng)
            inp, target, clean = augment(gen(z), cfg.augment, rng)
        zhat = enc(inp)
        loss_pix = pixel_loss(gen(zhat.view(-1, *gen.latent_shape)), target)
        loss_lat = (zhat - z.flatten(1)).pow(2).mean(1) * clean
        loss = (loss_pix + cfg.latent_weight * loss_lat).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        decay = min(cfg.ema, (1 + step) / (10 + step))  # short memory while E is still poor
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), enc.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        loss_avg = (
            0.98 * loss_avg + 0.02 * float(loss.detach()) if step > s0 + 1 else float(loss.detach())
        )
        if step % cfg.val_every == 0 or step == cfg.steps:
            val = evaluate(ema, gen, val_inp, val_target)
            history.append((step, round(loss_avg, 5), round(val, 3)))
            if val > best:
                best = val
                info = {**meta, "step": step, "val_psnr": round(val, 3), "config": asdict(cfg)}
                _atomic_save(export_state(ema, gen.model_id, info), best_path)
        now = time.time()
        if progress is not None:
            rate = (step - s0) / max(1e-9, now - t0)
            progress(TrainState(step, loss_avg, val, best, rate))
        if now - t_save >= cfg.checkpoint_s:
            save()
            t_save = now
        if stop_at is not None and now >= stop_at:
            break
    save()
    return TrainState(step, loss_avg, val, best, (step - s0) / max(1e-9, time.time() - t0))


# -- loading -------------------------------------------------------------------------------
def load_encoder(path: Path, gen: LayeredGenerator) -> ImageEncoder:
    """An exported encoder (``encoder.pt``) for ``gen``, in eval mode on gen's device."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"encoder file not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise ModelError(f"cannot read encoder {path}: {str(e)[:120]}") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ModelError(f"{path} is not a ganpaint encoder (format {FORMAT})")
    arch = EncoderArch(**ck["arch"])
    want = (gen.resolution, math.prod(gen.latent_shape))
    if ck["model_id"] != gen.model_id or (arch.resolution, arch.latent_dim) != want:
        raise ModelError(f"{path} is an encoder for {ck['model_id']}, not {gen.model_id}")
    enc = ImageEncoder(arch)
    enc.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    enc.meta = ck.get("meta", {})
    dev = next(gen.parameters()).device
    return enc.to(dev).eval().requires_grad_(False)


def encoders_dir() -> Path:
    """Where shipped encoders live (package data: ganpaint/core/data/encoders)."""
    return Path(__file__).resolve().parent / "data" / "encoders"


def model_encoder(gen: LayeredGenerator) -> ImageEncoder | None:
    """The encoder the registry declares for gen's model, or None when it has none."""
    from .generators.registry import get_spec

    try:
        spec = get_spec(gen.model_id)
    except ModelError:  # an unregistered generator (tests, custom layouts): no encoder
        return None
    if not spec.encoder:
        return None
    return load_encoder(encoders_dir() / spec.encoder, gen)
