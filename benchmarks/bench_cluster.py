"""Cluster benchmark: throughput of a CPU-bound load on 2 Ray workers against 1, in one run.

Serves the same load three times on loopback: the single-process server (`ganpaint serve
--threads 1`, a process of its own), then a front (in this process) on a local Ray cluster
(127.0.0.1) with 1 worker, then with 2 (torch 1 thread per worker). Each time, ``--seats``
clients (each its own session secret, as each GIMP seat has) edit their own photos at once:
one untimed edit each (models load, every worker warms up), then ``--edits`` timed edits each
on fresh photos (inversion + G′ fit: CPU-bound). Throughput = timed edits / wall time. With 2
workers it then kills (SIGKILL) the worker running one more edit mid-fit and reports how long
the client waited for the rerun's first progress and for its result; and ``--crowd`` seats
ask for one edit each at the same moment: how many were served.

    python benchmarks/bench_cluster.py [--seats 8] [--edits 2] [--steps 100] [--crowd 32]

Needs the optional extra: pip install 'ganpaint[cluster]'. On a machine with only 2 cores
the front, the clients and both workers share them (with whatever else runs there), so 2
workers cannot reach 2×.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import ray

from ganpaint.server.client.ganpaint_client import Client, RawImage, ServerError
from ganpaint.server.config import ClusterConfig, Limits, ServerConfig
from ganpaint.server.testing import running_server

SIZE = 96
MASK = np.zeros((SIZE, SIZE), np.uint8)
MASK[30:70, 24:72] = 255


def photo(seed: int) -> np.ndarray:
    """A smooth RGB 8-bit picture with some texture, [SIZE, SIZE, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([np.sin(5 * xx + c + seed) * np.cos(4 * yy - c) for c in range(3)], axis=2)
    rgb = (0.5 + 0.4 * rgb + rng.normal(0, 0.02, rgb.shape)).clip(0, 1)
    return (rgb * 255).round().astype(np.uint8)


def raw(arr: np.ndarray) -> RawImage:
    h, w = arr.shape[:2]
    return RawImage(arr.tobytes(), w, h, 1 if arr.ndim == 2 else arr.shape[2], "u8")


def seat(endpoint: str, i: int, seeds: list[int], out: list, progress=None) -> None:
    """One seat's edits, one after another; results (or errors) go to ``out``."""
    with Client(endpoint, timeout_s=60.0, session=f"bench-seat-{i:04d}-{'x' * 8}") as c:
        for s in seeds:
            try:
                edit = c.edit(raw(photo(s)), raw(MASK), op="add", units=[3, 5], progress=progress)
                out.append(edit)
            except ServerError as e:
                out.append(e)


def run_seats(endpoint: str, seats: int, seeds_of) -> tuple[float, list]:
    out: list = []
    threads = [
        threading.Thread(target=seat, args=(endpoint, i, seeds_of(i), out)) for i in range(seats)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, out


def timed(endpoint: str, args, label: str) -> float:
    run_seats(endpoint, args.seats, lambda i: [1000 + i])  # warm-up, untimed
    seconds, out = run_seats(
        endpoint, args.seats, lambda i: [2000 + i * args.edits + e for e in range(args.edits)]
    )
    failed = sum(1 for r in out if isinstance(r, Exception))
    rate = (len(out) - failed) / seconds
    print(f"{label}: {len(out)} edits in {seconds:.1f} s = {rate:.3f} edits/s, {failed} failed")
    return rate


@contextlib.contextmanager
def serve_process(args) -> Iterator[str]:
    """`ganpaint serve` in a process of its own, as a seat's server runs: its job does not
    share a GIL with the benchmark's clients (nor do the cluster's workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    cmd = [sys.executable, "-m", "ganpaint.server.cli", "serve", "--bind", endpoint]
    cmd += ["--threads", "1", "--steps", str(args.steps), "--invert-steps", str(args.invert_steps)]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        with Client(endpoint, timeout_s=60.0) as c:
            c.hello()
        yield endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def on_cluster(cfg: ServerConfig, args, label: str) -> float:
    with running_server(cfg, log=lambda line: None) as srv:
        rate = timed(srv.endpoint, args, label)
        time.sleep(1.5)  # the front's probes refresh each worker's counts every second
        print(
            f"  edits run per worker (warm-up included): {[w['done'] for w in srv.queue.workers()]}"
        )
        if cfg.cluster.workers > 1:
            failover(srv)
            crowd(srv, args.crowd)
    return rate


def failover(srv) -> None:
    seen: list[tuple[float, dict]] = []
    killed: dict[str, float] = {}

    def killer() -> None:
        while not any(p["stage"] == "adapt" for _, p in seen):
            time.sleep(0.02)
        slot = next(s for s in srv.queue.slots if s.running is not None)
        pid = ray.get(slot.handle.info.remote())["pid"]
        killed["at"], killed["n"] = time.perf_counter(), len(seen)
        os.kill(pid, signal.SIGKILL)

    out: list = []
    k = threading.Thread(target=killer)
    k.start()
    t0 = time.perf_counter()
    seat(srv.endpoint, 9999, [3000], out, progress=lambda p: seen.append((time.perf_counter(), p)))
    done = time.perf_counter()
    k.join()
    first = next(t for t, _ in seen[killed["n"] :])
    ok = isinstance(out[0], dict)
    print(
        f"failover: kill -9 of the worker {killed['at'] - t0:.1f} s into an edit; next progress "
        f"{first - killed['at']:.2f} s later, result {done - killed['at']:.1f} s after the kill "
        f"({'ok' if ok else out[0]}, session_reused={ok and out[0]['session_reused']})"
    )
    while not all(w["up"] for w in srv.queue.workers()):
        time.sleep(0.2)
    print(f"failover: the killed worker is up again {time.perf_counter() - done:.1f} s later")


def crowd(srv, seats: int) -> None:
    seconds, out = run_seats(srv.endpoint, seats, lambda i: [4000 + i])
    busy = sum(1 for r in out if isinstance(r, ServerError) and r.code == "busy")
    ok = sum(1 for r in out if isinstance(r, dict))
    print(f"crowd: {seats} seats asking at once: {ok} served, {busy} busy, in {seconds:.1f} s")


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seats", type=int, default=8)
    p.add_argument("--edits", type=int, default=2, help="timed edits per seat")
    p.add_argument("--steps", type=int, default=100, help="G′ steps per edit")
    p.add_argument("--invert-steps", type=int, default=60)
    p.add_argument("--crowd", type=int, default=32, help="seats asking at once (2 workers)")
    args = p.parse_args(argv)
    print(f"{cpu_name()}, {os.cpu_count()} cores; {args.seats} seats × {args.edits} timed edits")
    with serve_process(args) as endpoint:
        rates = {0: timed(endpoint, args, "single-process server")}
    base = ServerConfig(
        bind="tcp://127.0.0.1:*",
        steps=args.steps,
        invert_steps=args.invert_steps,
        limits=Limits(max_queue=8),
    )
    for n in (1, 2):
        cfg = replace(base, cluster=ClusterConfig(workers=n, threads=1, object_store_mb=256))
        rates[n] = on_cluster(cfg, args, f"cluster, {n} worker(s)")
    print(
        f"throughput ratio: 2 workers / 1 worker = {rates[2] / rates[1]:.2f}; "
        f"1 worker / single-process server = {rates[1] / rates[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
