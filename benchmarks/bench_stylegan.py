"""One fast and one faithful edit of a 1024² photo with a StyleGAN2 or StyleGAN3 of FFHQ's shape.

The weights are random (seeded; the architecture is FFHQ-1024's: StyleGAN2 with channel base
32768, max 512, 8 mapping layers, conv_clamp 256, 4 FP16 resolutions; ``--arch sg3-t``
StyleGAN3-T with the stylegan3 defaults and 2 mapping layers, ``sg3-r`` its -R: 1×1 convs,
radial filters, channel base 65536, max 1024), written as an NVIDIA pickle,
added with ``models add`` and edited through core/pipeline.py as ``ganpaint edit`` does.
Image quality means nothing here; this sizes time and memory. A full-length edit takes
hours on a 2-core CPU, so each phase runs a capped number of steps and the row gives its
seconds per step (fixed costs included: the random starts' renders, the final renders and
the composite, so an over-estimate), then the default-length time it implies (inversion:
120 evaluations; faithful: 1000 G′ steps; fast: at most 300, usually fewer). Peak RSS is the
process's, sampled every 5 ms.

``--end-to-end`` runs the commands a user runs instead, each as its own process under
``/usr/bin/time -v`` (wall time and peak RSS): ``ganpaint models add``, ``ganpaint edit``
fast and faithful on a 1024² PNG with a selection (unit 1, ``--op``; an add's first edit
also samples the model's on-values), and the fast edit once more through ``ganpaint
serve`` and the reference client. Run it with ``nice -n 19`` on a shared machine
(the children inherit it).

    python benchmarks/bench_stylegan.py [--arch sg2|sg3-t|sg3-r] [--steps 4]
        [--invert-steps 4] [--per-step-only [--reps 3]] [--end-to-end [--op add|remove]]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from samples import make_mask, make_photo  # noqa: E402
from stylegan_layouts import ada_state_dict, init_kwargs, write_nvidia_pickle  # noqa: E402

from ganpaint.core.edit import unit_quantiles  # noqa: E402
from ganpaint.core.generators import load_model, model_specs  # noqa: E402
from ganpaint.core.pipeline import EditSpec, edit_photo, prepare  # noqa: E402
from ganpaint.server.cli.bench import PeakRSS  # noqa: E402
from ganpaint.server.cli.main import build_parser, fit_config  # noqa: E402

FFHQ = dict(res=1024, z_dim=512, w_dim=512, maps=8, base=32768, cmax=512, clamp=256.0)


def write_sg3_ffhq(path: Path, variant: str) -> None:
    """A StyleGAN3-``variant`` of FFHQ-1024's shape, seeded random weights (filters: a
    normalised Hann low-pass of each layer's length), as NVIDIA's pickle."""
    from stylegan_layouts import _EasyDict, _lowpass

    from ganpaint.core.generators.stylegan3 import StyleGAN3, StyleGAN3Config

    r = variant == "r"
    cfg = StyleGAN3Config(channel_base=32768 * (1 + r), channel_max=512 * (1 + r),
                          conv_kernel=1 if r else 3, use_radial_filters=r)  # fmt: skip
    kw = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
              mapping_kwargs=_EasyDict(num_layers=2), channel_base=cfg.channel_base,
              channel_max=cfg.channel_max, magnitude_ema_beta=0.999, num_fp16_res=4,
              conv_clamp=256)  # fmt: skip
    if r:
        kw.update(conv_kernel=1, use_radial_filters=True)
    gen = StyleGAN3(cfg)
    g = torch.Generator().manual_seed(0)
    own = gen.state_dict()
    sd = {}
    for theirs, ours in gen.published_names().items():
        t = own[ours]
        if theirs.endswith("_filter"):
            f = _lowpass(t.shape[0])
            t = torch.outer(f, f) if t.ndim == 2 else f
        elif theirs.endswith(("magnitude_ema", "transform")):
            pass  # 1 and the identity, as a model starts training
        elif theirs.startswith("mapping.fc") and theirs.endswith("weight"):
            t = torch.randn(t.shape, generator=g) * 100  # randn / lr 0.01
        elif theirs.endswith("bias") or theirs.endswith("phases"):
            t = (1.0 if "affine" in theirs else 0.0) + 0.1 * torch.randn(t.shape, generator=g)
        else:
            t = torch.randn(t.shape, generator=g)
        sd[theirs] = t
    write_nvidia_pickle(path, sd, kw)


DEFAULTS = {"invert": 120, "faithful": 1000, "fast": 300}


def row(name: str, t0: float, mem: PeakRSS, steps: int = 0, default: int = 0) -> dict:
    """One result line (printed as it comes): seconds, steps, peak RSS, and for a capped
    phase its seconds per step times the default number of steps."""
    dt = time.perf_counter() - t0
    out = {"row": name, "seconds": round(dt, 1), "rss_mib": round(mem.peak)}
    if steps:
        out.update(steps=steps, s_per_step=round(dt / steps, 2))
        out["at_default_length_s"] = round(dt / steps * default)
    out["load"] = round(os.getloadavg()[0], 1)
    print(out, flush=True)
    return out


def evaluation_cost(gen, name: str, start: int, reps: int = 3) -> dict:
    """G_F from layer ``start``, forward and backward to its input (an inversion step at the
    edit layer; about a G′ step at the split, without R's own cost): the median of reps,
    wall and process CPU seconds (on a shared machine CPU/threads is the quiet wall time)."""
    w = gen.sample_latent(1, torch.Generator().manual_seed(0))
    bound = gen.bind(w)
    with torch.no_grad():
        r = gen.run(w, 0, start)
    times, cpu = [], []
    with PeakRSS() as mem:
        for _ in range(reps):
            v = r.clone().requires_grad_(True)
            t0, c0 = time.perf_counter(), time.process_time()
            bound.run(v, start).square().mean().backward()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    out = {"row": f"G_F from the {name} ({gen.layer_names[start]}), fwd+bwd",
           "seconds": round(sorted(times)[reps // 2], 2),
           "cpu_s": round(sorted(cpu)[reps // 2], 2), "threads": torch.get_num_threads(),
           "rss_mib": round(mem.peak), "load": round(os.getloadavg()[0], 1)}  # fmt: skip
    print(out, flush=True)
    return out


def finish(rows: list[dict], path: Path | None) -> int:
    if path:
        path.write_text(json.dumps(rows, indent=2))
    return 0


def timed(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """``cmd`` under ``/usr/bin/time -v``, its report in ``log``; in its own process group
    so that a SIGINT reaches ``cmd`` (time itself ignores SIGINT and then reports)."""
    print("$", " ".join(cmd), flush=True)
    return subprocess.Popen(["/usr/bin/time", "-v", "-o", str(log), *cmd],
                            start_new_session=True, **kw)  # fmt: skip


def time_report(log: Path) -> dict:
    """Wall seconds, peak RSS (MiB), CPU seconds and exit status from time -v's report."""
    text = log.read_text()

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (.*)", text).group(1).strip()

    h, m, sec = (["0", "0"] + field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"))[-3:]
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return {"wall_s": round(int(h) * 3600 + int(m) * 60 + float(sec), 1), "cpu_s": round(cpu, 1),
            "rss_mib": round(int(field("Maximum resident set size (kbytes)")) / 1024),
            "exit": int(field("Exit status"))}  # fmt: skip


def run_timed(name: str, cmd: list[str], tmp: Path) -> dict:
    log = tmp / (re.sub(r"\W+", "-", name).strip("-") + ".time")
    proc = timed(cmd, log, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    row = {"row": name, **time_report(log), "load": round(os.getloadavg()[0], 1)}
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if last.startswith("{"):
        info = json.loads(last)
        row.update({k: info[k] for k in ("steps", "seconds", "psnr_keep") if k in info})
    print(row, flush=True)
    return row


def served_edit(ganpaint: str, args, tmp: Path, photo: np.ndarray, mask: np.ndarray) -> dict:
    """The fast edit through ``ganpaint serve`` and the reference client; the server's wall
    time is from its start to its stop after the one edit (loading the model included)."""
    from ganpaint.server.client.ganpaint_client import Client, RawImage, ServerError

    address = f"ipc://{tmp}/serve.sock"
    cmd = [ganpaint, "serve", "--bind", address, "--model", "ffhq-shaped",
           "--steps", str(args.steps), "--invert-steps", str(args.invert_steps)]  # fmt: skip
    log = tmp / "serve.time"
    server = timed(cmd, log)
    try:
        with Client(address, timeout_s=5, retries=1) as client:
            for _ in range(120):  # the server binds within seconds
                try:
                    client.hello()
                    break
                except ServerError:
                    time.sleep(1)
            t0 = time.perf_counter()
            res = client.edit(
                RawImage(photo.tobytes(), 1024, 1024, 3, "u8"),
                RawImage(mask.tobytes(), 1024, 1024, 1, "u8"),
                op=args.op, units=[1], quality="fast", model="ffhq-shaped",
            )  # fmt: skip
            seconds = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)
    kept = np.frombuffer(res["image"].data, np.uint8).reshape(photo.shape)
    row = {"row": "served fast edit (client)", "client_s": round(seconds, 1),
           "steps": res.get("steps"), "psnr_keep": res.get("psnr_keep"),
           "outside_bit_identical": bool(np.array_equal(kept[mask == 0], photo[mask == 0])),
           "server": time_report(log), "load": round(os.getloadavg()[0], 1)}  # fmt: skip
    print(row, flush=True)
    return row


def end_to_end(args, tmp: Path, pkl: Path) -> list[dict]:
    """models add, edit fast and faithful, the fast edit through the server: the CLI's own
    processes, steps capped with its own flags."""
    from PIL import Image

    ganpaint = str(Path(sys.executable).with_name("ganpaint"))
    photo = make_photo(1024, 1024)
    mask = make_mask(1024, 1024, (384, 384, 640, 640))
    Image.fromarray(photo).save(tmp / "photo.png")
    Image.fromarray(mask).save(tmp / "mask.png")
    rows = [run_timed("models add", [ganpaint, "models", "add", str(pkl), "--name",
                                     "ffhq-shaped", "--json"], tmp)]  # fmt: skip
    for quality in ("fast", "faithful"):
        cmd = [ganpaint, "edit", str(tmp / "photo.png"), "--mask", str(tmp / "mask.png"),
               "-o", str(tmp / f"{quality}.png"), "--units", "1", "--op", args.op,
               "--quality", quality, "--steps", str(args.steps),
               "--invert-steps", str(args.invert_steps), "--model", "ffhq-shaped",
               "--json", "--quiet"]  # fmt: skip
        rows.append(run_timed(f"edit --quality {quality}", cmd, tmp))
        out = np.asarray(Image.open(tmp / f"{quality}.png"))
        rows[-1]["outside_bit_identical"] = bool(np.array_equal(out[mask == 0], photo[mask == 0]))
    rows.append(served_edit(ganpaint, args, tmp, photo, mask))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--invert-steps", type=int, default=4)
    p.add_argument("--json", type=Path)
    p.add_argument("--per-step-only", action="store_true", help="only the fwd+bwd rows")
    p.add_argument("--arch", choices=["sg2", "sg3-t", "sg3-r"], default="sg2")
    p.add_argument("--reps", type=int, default=3, help="fwd+bwd repeats (0: none)")
    p.add_argument("--end-to-end", action="store_true",
                   help="the ganpaint commands as processes: models add, edit, serve")  # fmt: skip
    p.add_argument("--op", choices=["add", "remove"], default="add",
                   help="--end-to-end's edit: add samples the on-values first (once per "
                        "model, in the first edit); remove needs none")  # fmt: skip
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stylegan-"))
    os.environ["GANPAINT_DATA"] = str(tmp / "data")
    os.environ["GANPAINT_CACHE"] = str(tmp / "cache")
    rows: list[dict] = []
    pkl = tmp / "ffhq-shaped.pkl"
    if args.arch == "sg2":
        write_nvidia_pickle(pkl, ada_state_dict(FFHQ, seed=0), init_kwargs(FFHQ))
    else:
        write_sg3_ffhq(pkl, args.arch[-1])
    if args.end_to_end:
        return finish(end_to_end(args, tmp, pkl), args.json)
    from ganpaint.core.generators.user_models import add_model

    t0 = time.perf_counter()
    with PeakRSS() as mem:
        add_model(pkl, "ffhq-shaped", {s.id for s in model_specs() if not s.added})
        gen = load_model("ffhq-shaped", device="cpu")
    rows.append(row("models add + load", t0, mem))
    rows[-1]["file_mib"] = pkl.stat().st_size / 2**20
    for name, start in (("edit layer", gen.edit_index + 1), ("split", gen.default_split())):
        if args.reps:  # --reps 0: the edits only
            rows.append(evaluation_cost(gen, name, start, args.reps))
    if args.per_step_only:
        return finish(rows, args.json)
    photo = make_photo(1024, 1024)
    mask = make_mask(1024, 1024, (384, 384, 640, 640))
    spec = EditSpec([1, 4, 7, 10], "add")
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        on = unit_quantiles(gen, gen.edit_index, 256)  # the server computes these once
    rows.append(row("on-values (256 samples to the edit layer)", t0, mem))
    for quality in ("fast", "faithful"):
        cli = build_parser().parse_args(
            ["edit", "p", "--mask", "m", "-o", "o", "--units", "1", "--op", "add",
             "--quality", quality, "--steps", str(args.steps),
             "--invert-steps", str(args.invert_steps), "--model", "ffhq-shaped"]
        )  # fmt: skip
        cfg = fit_config(cli, gen)
        cache: dict = {}
        t0 = time.perf_counter()
        with PeakRSS() as mem:  # step 1: the inversion (random starts, then L-BFGS)
            inv = prepare(gen, photo, mask, cfg, cache=cache).session.inversion
        rows.append(row(f"{quality}: inversion", t0, mem, inv.steps, DEFAULTS["invert"]))
        t0 = time.perf_counter()
        with PeakRSS() as mem:  # steps 2–4 on the session: edit, G′ fit, composite
            res = edit_photo(gen, photo, mask, spec, cfg, cache=cache, on_values=on)
        rows.append(row(f"{quality}: edit + G′ fit + composite", t0, mem, res.steps,
                        DEFAULTS[quality]))  # fmt: skip
        rows[-1]["outside_bit_identical"] = bool(
            np.array_equal(res.image[mask == 0], photo[mask == 0])
        )
    return finish(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
