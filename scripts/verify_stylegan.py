"""Check our StyleGAN2 and StyleGAN3 against the reference implementations, with random weights.

    python scripts/verify_stylegan.py [--ada DIR] [--rosinality DIR] [--sg3 DIR]
                                      [--sg3-variants t,r] [--shapes small,ffhq]

DIR is a checkout of NVlabs/stylegan2-ada-pytorch (resp. rosinality/stylegan2-pytorch,
NVlabs/stylegan3); nothing is downloaded. The script imports *their* code (it is a
developer's check, never part of ganpaint), builds their generator with random weights
(biases, noise strengths, w_avg and the style biases randomised too, so no term hides behind
a zero; for StyleGAN3 also the input's affine, its ``transform`` and every magnitude EMA),
saves it the way they do (``pickle.dump({"G_ema": G, …})`` for NVIDIA, ``torch.save({"g_ema":
…, "latent_avg": …})`` for rosinality), loads that file with ganpaint's loader (which never
runs the file's code) and compares the two images from the same z, the same W+ and the same
(constant) noise, both in float32 on the CPU (the reference's FP16 layers forced to float32;
StyleGAN3's custom ops take their pure-PyTorch reference paths, as they do on every CPU). It
prints one row per case: max |ours − reference| and max |reference|. ``ffhq`` is FFHQ-1024's
shape (StyleGAN2: channel base 32768, max 512, 8 mapping layers, 4 FP16 resolutions,
conv_clamp 256; StyleGAN3-T: 2 mapping layers, the stylegan3 defaults; -R: 1×1 convs, radial
filters, channel base 65536, max 1024; a batch of 1: the reference's CPU path needs ~14 GiB
for it); ``small`` is 32 px with conv_clamp 1 (StyleGAN2) or
64 px, channel base 2048, max 64 (StyleGAN3, conv_clamp 1) so that the clamps act. The
references need ``requests`` importable (an empty module will do: nothing is fetched);
stylegan3 also needs scipy (to design its filters) and ``pkg_resources.parse_version``
(a module with that one function will do).
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import tempfile
from pathlib import Path

import torch

from ganpaint.core.generators.stylegan_files import load_stylegan

SHAPES = {
    "small": dict(res=32, base=512, cmax=64, maps=2, fp16=2, clamp=1.0),
    "ffhq": dict(res=1024, base=32768, cmax=512, maps=8, fp16=4, clamp=256.0),
}


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                base = 1.0 if ("affine" in name or "modulation" in name) else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("w_avg"):
                b.copy_(torch.randn(b.shape, generator=g))


def ours(path: Path, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gen = load_stylegan(path).eval()
    with torch.no_grad():
        ws = gen.map(z, psi=0.7)
        return gen(ws), ws


def generator_kwargs(res: int, map_layers: int) -> dict:
    """The arguments both NVIDIA Generators take: unconditional, RGB, z and w of 512."""
    return dict(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": map_layers},
    )


def check_ada(repo: Path, shape: dict, folder: Path) -> tuple[float, float]:
    sys.path.insert(0, str(repo))
    from training.networks import Generator  # the reference, from the checkout given

    G = Generator(
        **generator_kwargs(shape["res"], shape["maps"]),
        synthesis_kwargs=dict(
            channel_base=shape["base"],
            channel_max=shape["cmax"],
            num_fp16_res=shape["fp16"],
            conv_clamp=shape["clamp"],
        ),
    ).eval()
    randomise(G, 1)
    path = folder / f"ada-{shape['res']}.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None}, f)
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_ws = G.mapping(z, None, truncation_psi=0.7)
        ref = G.synthesis(ref_ws, noise_mode="const", force_fp32=True)
    img, ws = ours(path, z)
    print(f"  W+ max |diff| {float((ws - ref_ws).abs().max()):.2e}")
    return float((img - ref).abs().max()), float(ref.abs().max())


def check_rosinality(repo: Path, shape: dict, folder: Path) -> tuple[float, float]:
    sys.path.insert(0, str(repo))
    from model import Generator  # rosinality's, from the checkout given

    cm = max(shape["base"] // 16384, 1)  # rosinality's channels: 512 up to 32 px, then 16384·cm/r
    g = Generator(shape["res"], 512, shape["maps"], channel_multiplier=cm).eval()
    randomise(g, 3)
    latent_avg = torch.randn(512, generator=torch.Generator().manual_seed(4))
    path = folder / f"rosinality-{shape['res']}.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, path)
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(5))
    noise = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
    with torch.no_grad():
        ref, _ = g([z], truncation=0.7, truncation_latent=latent_avg[None], noise=noise)
    img, _ = ours(path, z)
    return float((img - ref).abs().max()), float(ref.abs().max())


SG3_SHAPES = {
    "small": dict(res=64, base=2048, cmax=64, clamp=1.0, batch=2),
    "ffhq": dict(res=1024, base=32768, cmax=512, clamp=256.0, batch=1),
}


def check_sg3(repo: Path, name: str, variant: str, folder: Path) -> tuple[float, float]:
    sys.path.insert(0, str(repo))
    from training.networks_stylegan3 import Generator  # the reference, from the checkout

    shape = SG3_SHAPES[name]
    radial = dict(conv_kernel=1, use_radial_filters=True) if variant == "r" else {}
    widen = 2 if variant == "r" else 1  # -R doubles the channel base and max
    G = Generator(
        **generator_kwargs(shape["res"], 2),
        channel_base=shape["base"] * widen,
        channel_max=shape["cmax"] * widen,
        conv_clamp=shape["clamp"],
        magnitude_ema_beta=0.5 ** (32 / 20e3),
        **radial,
    ).eval()
    randomise(G, 6)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        inp = G.synthesis.input
        inp.affine.weight.copy_(torch.randn(inp.affine.weight.shape, generator=g))
        angle, shift = 0.3, torch.randn(2, generator=g) * 0.1  # a user transform
        inp.transform.copy_(
            torch.tensor(
                [
                    [math.cos(angle), -math.sin(angle), float(shift[0])],
                    [math.sin(angle), math.cos(angle), float(shift[1])],
                    [0.0, 0.0, 1.0],
                ]
            )
        )
        for m in G.synthesis.modules():
            if hasattr(m, "magnitude_ema"):
                m.magnitude_ema.copy_(0.5 + torch.rand((), generator=g))
    path = folder / f"sg3-{variant}-{shape['res']}.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None}, f)
    z = torch.randn(shape["batch"], 512, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref_ws = G.mapping(z, None, truncation_psi=0.7)
        ref = G.synthesis(ref_ws, force_fp32=True)
    img, ws = ours(path, z)
    print(f"  W+ max |diff| {float((ws - ref_ws).abs().max()):.2e}")
    return float((img - ref).abs().max()), float(ref.abs().max())


def row(case: str, shape: dict, diff: float, scale: float) -> None:
    print(f"{case} ({shape['res']} px): max |diff| {diff:.2e}, max |ref| {scale:.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ada", type=Path)
    p.add_argument("--rosinality", type=Path)
    p.add_argument("--sg3", type=Path)
    p.add_argument("--sg3-variants", default="t,r", help="StyleGAN3 configs to check")
    p.add_argument("--shapes", default="small,ffhq")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            shape = SHAPES[name]
            if args.ada:
                row(f"stylegan2-ada {name}", shape, *check_ada(args.ada, shape, Path(tmp)))
            if args.rosinality:
                row(
                    f"rosinality {name}",
                    shape,
                    *check_rosinality(args.rosinality, shape, Path(tmp)),
                )
            for variant in args.sg3_variants.split(",") if args.sg3 else ():
                case = f"stylegan3-{variant} {name}"
                row(case, SG3_SHAPES[name], *check_sg3(args.sg3, name, variant, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
