"""``ganpaint bench``: the faithful G′ fit against the fast path, in one process, and the
time of step 4 at photo resolution (core/composite.py) on a 2000×2000 crop.

Same photo, mask and edit for every run. The photo is G(z*) plus detail G lacks (so the
inversion is z* and G′ has real work to do); the session (inversion + base fit of the
unedited photo) is built first and timed separately, as the server holds it before an edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ganpaint.core import region
from ganpaint.core.adapt import DEFAULT_STEPS, AdaptConfig, adapt, keep_mask
from ganpaint.core.edit import apply_edit, unit_quantiles
from ganpaint.core.fast import FastConfig, base_fit, fast_adapt
from ganpaint.core.generators.base import LayeredGenerator, ModelError, freeze
from ganpaint.core.metrics import psnr

# GAN Dissection churchoutdoor layer4 "tree" units (method.md); any units on random weights.
TREE = [119, 125, 157, 195]


class PeakRSS:
    """Peak resident memory (MiB) while the block runs, sampled from /proc every 5 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = _rss(), threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())


def _rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Row:
    name: str
    seconds: float
    steps: int
    psnr_keep: float
    psnr_vs_ref: float
    rss_mib: float
    image: torch.Tensor | None = None

    def line(self, ref_s: float | None) -> str:
        ratio = f"{ref_s / self.seconds:7.1f}x" if ref_s else "      -"
        load = os.getloadavg()[0]
        return (
            f"  {self.name:<34} {self.seconds:8.2f} s {self.steps:5d} steps "
            f"{self.seconds / max(self.steps, 1):7.4f} s/step  psnr_keep {self.psnr_keep:6.2f}"
            f"  vs_ref {self.psnr_vs_ref:6.2f}  rss {self.rss_mib:6.0f} MiB  {ratio}"
            f"  load {load:.1f}"
        )


def load_generator(name: str) -> tuple[LayeredGenerator, str]:
    """'dcgan' (the real default model) or 'progan' (a published checkpoint if cached, else
    random weights of the published shape)."""
    from ganpaint.core.generators import load_model

    if name == "dcgan":
        return load_model("digiface-dcgan64", "cpu"), "real weights (digiface-dcgan64)"
    try:
        return load_model("progan-churchoutdoor", "cpu", download=False), "real checkpoint"
    except (ModelError, OSError):
        from ganpaint.core.generators.progan import ProGAN256

        torch.manual_seed(0)
        return freeze(ProGAN256()), "random weights, published shape (no checkpoint cached)"


def make_case(gen: LayeredGenerator, selection: float = 0.25, seed: int = 1):
    """x [1,3,R,R], inversion r at the edit layer, edited r_e, mask, keep."""
    g = torch.Generator().manual_seed(seed)
    res, k = gen.resolution, gen.edit_index
    with torch.no_grad():
        z = gen.sample_latent(1, g)
        r = gen.run(z, 0, k + 1)
        img = gen.bind(z).run(r, k + 1)
        img = img / img.abs().amax().clamp_min(1e-6) * 0.9
        yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
        detail = 0.15 * torch.sin(xx / 3.0) * torch.cos(yy / 5.0)  # fine texture G lacks
        x = (img + detail + 0.03 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
    side = round(res * selection**0.5)
    y0 = x0 = round(res * 0.3)
    mask = torch.zeros(1, 1, res, res)
    mask[..., y0 : y0 + side, x0 : x0 + side] = 1
    units = TREE if gen.infos[k].channels > max(TREE) else [0, 1, 2, 3]
    on = unit_quantiles(gen, k, 64)
    r_e = apply_edit(r, mask, units, on[units])
    return x, r, r_e, mask, keep_mask(mask, res)


def timed(fn: Callable):
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return out, dt, mem.peak


def bench_model(
    name: str,
    ref_steps: int,
    base_steps: int,
    ablations: bool,
    log: Callable[[str], None],
    base_kind: str = "direct",
) -> dict:
    gen, weights = load_generator(name)
    h = gen.default_split()
    x, r, r_e, mask, keep = make_case(gen)
    k = gen.edit_index
    with torch.no_grad():
        zh0, zh_e = gen.run(r, k + 1, h), gen.run(r_e, k + 1, h)
    free = 1 - keep
    log(
        f"{gen.model_id} ({weights}), {gen.resolution} px, split h={h}, "
        f"selection {mask.mean().item():.0%} of frame, threads {torch.get_num_threads()}"
    )
    rows: list[Row] = []

    def row(nm: str, res, dt: float, rss: float, ref_img: torch.Tensor | None) -> Row:
        vs = psnr(res.image, ref_img, free) if ref_img is not None else float("nan")
        rw = Row(nm, dt, res.steps, res.psnr_keep, vs, rss, res.image)
        rows.append(rw)
        log(rw.line(rows[0].seconds if rows and rows[0] is not rw else None))
        return rw

    cfg = AdaptConfig(steps=ref_steps)
    res, dt, rss = timed(lambda: adapt(gen, zh_e, x, keep, cfg))
    ref = row(f"faithful reference ({ref_steps} steps)", res, dt, rss, None)
    # The session's base fit of the unedited photo (setup, held before an edit): what
    # `reconstruct --quality fast` makes (direct δ, early-stopped), or a faithful R fit.
    fcfg = FastConfig(base_steps=base_steps)
    ones = torch.ones_like(keep)
    if base_kind == "direct":
        base, dt_b, _ = timed(lambda: base_fit(gen, zh0, x, cfg, fcfg))
    else:
        base, dt_b, _ = timed(lambda: adapt(gen, zh0, x, ones, AdaptConfig(steps=base_steps)))
    log(
        f"  session base fit ({base_kind}, unedited, keep=1, {base.steps} steps): {dt_b:.1f} s, "
        f"psnr {base.psnr_keep:.2f} dB  [setup, not part of an edit]"
    )

    def fast(nm: str, fc: FastConfig = fcfg, **kw) -> Row:
        res, dt, rss = timed(lambda: fast_adapt(gen, zh_e, x, keep, cfg, fc, **kw))
        return row(nm, res, dt, rss, ref.image)

    best = fast("fast (all techniques)", base=base.fit)
    if ablations:
        rep = dataclasses.replace
        fast("  without the window (full frame)", base=base.fit, target=region.full(gen.resolution))
        fast(f"  without early stop ({fcfg.max_steps})", rep(fcfg, patience=10**9), base=base.fit)
        fast("  without the reset of free δ", rep(fcfg, reset_free=False), base=base.fit)
        fast("  without warm start (cold, full frame)", base=None)
        res, dt, rss = timed(lambda: adapt(gen, zh_e, x, keep, rep(cfg, variant="direct")))
        row(f"  faithful, direct δ instead of R ({ref_steps})", res, dt, rss, ref.image)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fast("  fast, 1 thread", base=base.fit)
        finally:
            torch.set_num_threads(threads)
    log(
        f"  speed-up fast vs faithful: {ref.seconds / best.seconds:.1f}x; psnr_keep "
        f"{best.psnr_keep - ref.psnr_keep:+.2f} dB vs reference"
    )
    return {
        "model": gen.model_id,
        "weights": weights,
        "resolution": gen.resolution,
        "base_fit": base_kind,
        "base_fit_s": dt_b,
        "base_fit_steps": base.steps,
        "base_fit_psnr": base.psnr_keep,
        "rows": [{k2: v for k2, v in vars(rw).items() if k2 != "image"} for rw in rows],
        "speedup": ref.seconds / best.seconds,
    }


def composite_seconds(
    res: int,
    fn: Callable | None = None,
    size: int = 2000,
    repeat: int = 3,
    recolour: bool = False,
):
    """Median seconds of step 4 at the photo's resolution (``core.composite.composite``, or
    fn(photo, generated, mask, box)) on a size×size crop with a size/2-wide round selection
    whose content is all replaced (the most work: grain everywhere), or with ``recolour``
    all carried by the colour transform (a tone and tint change of G's rendering)."""
    import numpy as np

    from ganpaint.core.composite import Layers, composite
    from ganpaint.core.photo import Box, to_model

    rng = np.random.default_rng(0)
    photo = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((np.hypot(yy - size / 2, xx - size / 2) <= size / 4) * 255).astype(np.uint8)
    x = to_model(photo, res)
    if recolour:
        e = (0.7 * x + torch.tensor([0.3, 0.1, -0.2]).view(1, 3, 1, 1)).clamp(-1, 1)
    else:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        e = (x + 0.3 * noise).clamp(-1, 1)
    layers, box = Layers(x, e, x, torch.ones(1, 1, res, res)), Box(0, 0, size)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        if fn is None:
            composite(photo, mask, box, layers)
        else:
            fn(photo, e, mask, box)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = []
    for name in args.models:
        out.append(
            bench_model(name, args.ref_steps, args.base_steps, args.ablations, print, args.base)
        )
        res = out[-1]["resolution"]
        out[-1]["composite_2000_s"] = t = composite_seconds(res)
        out[-1]["composite_recolour_2000_s"] = tc = composite_seconds(res, recolour=True)
        print(
            f"  composite at photo resolution (2000×2000 crop, R={res}): {t:.3f} s all "
            f"replaced, {tc:.3f} s all recoloured"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="time the faithful G′ fit against the fast path")
    p.add_argument("--models", nargs="+", default=["dcgan", "progan"], choices=["dcgan", "progan"])
    p.add_argument("--ref-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--base-steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--ablations", action="store_true", help="time each technique alone")
    p.add_argument(
        "--base",
        choices=["direct", "network"],
        default="direct",
        help="the session's base fit: direct δ early-stopped (what --quality fast makes) or R",
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="")
    p.set_defaults(func=cmd_bench)
