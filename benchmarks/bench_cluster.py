"""Cluster benchmark: throughput of a CPU-bound load on 2 Ray workers against 1, in one run.

Starts the edit server three times on loopback, each time behind the same ZeroMQ front code:
the single-process server, then a local Ray cluster (127.0.0.1) with 1 worker, then with 2
(torch 1 thread per worker). Each time, ``--seats`` clients (each its own session secret, as
each GIMP seat has) edit their own photos at once: one untimed edit each (models load, every
worker warms up), then ``--edits`` timed edits each on fresh photos (inversion + G′ fit:
CPU-bound). Throughput = timed edits / wall time. With 2 workers it then kills (SIGKILL) the
worker running one more edit mid-fit and reports how long the client waited for the rerun's
first progress and for its result; and ``--crowd`` seats ask for one edit each at the same
moment: how many were served.

    python benchmarks/bench_cluster.py [--seats 8] [--edits 2] [--steps 100] [--crowd 32]

Needs the optional extra: pip install 'ganpaint[cluster]'. On a machine with only 2 cores
the front, the clients and both workers share them, so 2 workers cannot reach 2×.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import ray

from ganpaint.server.client import Client, RawImage, ServerError
from ganpaint.server.config import ClusterConfig, Limits, ServerConfig
from ganpaint.server.testing import running_server


def photo(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(5 * xx + c + seed) * np.cos(4 * yy - c) for c in range(3)], axis=2)
    rgb = (0.5 + 0.4 * rgb + rng.normal(0, 0.02, rgb.shape)).clip(0, 1)
    return (rgb * 255).round().astype(np.uint8)


def raw(arr: np.ndarray) -> RawImage:
    h, w = arr.shape[:2]
    return RawImage(arr.tobytes(), w, h, 1 if arr.ndim == 2 else arr.shape[2], "u8")


MASK = np.zeros((96, 96), np.uint8)
MASK[30:70, 24:72] = 255


def seat(endpoint: str, i: int, seeds: list[int], out: list, progress=None) -> None:
    with Client(endpoint, timeout_s=60.0, session=f"bench-seat-{i:04d}-{'x' * 8}") as c:
        for s in seeds:
            try:
                out.append(
                    c.edit(raw(photo(s)), raw(MASK), op="add", units=[3, 5], progress=progress)
                )
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


def throughput(cfg: ServerConfig, args, label: str) -> float:
    with running_server(cfg, log=lambda line: None) as srv:
        run_seats(srv.endpoint, args.seats, lambda i: [1000 + i])  # warm-up, untimed
        seconds, out = run_seats(
            srv.endpoint,
            args.seats,
            lambda i: [2000 + i * args.edits + e for e in range(args.edits)],
        )
        failed = [r for r in out if isinstance(r, Exception)]
        rate = (len(out) - len(failed)) / seconds
        print(
            f"{label}: {len(out)} edits in {seconds:.1f} s = {rate:.3f} edits/s, "
            f"{len(failed)} failed"
        )
        if cfg.cluster is not None:
            time.sleep(1.5)  # the front's probes refresh each worker's counts every second
            done = [w["done"] for w in srv.queue.workers()]
            print(f"  edits run per worker (warm-up included): {done}")
        if cfg.cluster is not None and cfg.cluster.workers > 1:
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
        f"failover: kill -9 of the worker at {killed['at'] - t0:.1f} s into an edit; next progress "
        f"{first - killed['at']:.2f} s later, result {done - killed['at']:.1f} s after the kill "
        f"({'ok' if ok else out[0]}, session_reused={ok and out[0]['session_reused']})"
    )
    while not all(w["up"] for w in srv.queue.workers()):
        time.sleep(0.2)
    print(
        f"failover: the killed worker is back {time.perf_counter() - done:.1f} s after the result"
    )


def crowd(srv, seats: int) -> None:
    seconds, out = run_seats(srv.endpoint, seats, lambda i: [4000 + i])
    busy = sum(1 for r in out if isinstance(r, ServerError) and r.code == "busy")
    ok = sum(1 for r in out if isinstance(r, dict))
    print(f"crowd: {seats} seats asking at once: {ok} served, {busy} busy, in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seats", type=int, default=8)
    p.add_argument("--edits", type=int, default=2, help="timed edits per seat")
    p.add_argument("--steps", type=int, default=100, help="G′ steps per edit")
    p.add_argument("--invert-steps", type=int, default=60)
    p.add_argument("--crowd", type=int, default=32, help="seats asking at once (2 workers)")
    args = p.parse_args(argv)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.seats} seats"
    )
    limits = Limits(max_queue=8)
    single = ServerConfig(
        bind="tcp://127.0.0.1:*", steps=args.steps, invert_steps=args.invert_steps, limits=limits
    )
    import torch

    torch.set_num_threads(1)  # as each worker runs
    rates = {"single": throughput(single, args, "single process")}
    for n in (1, 2):
        cfg = replace(single, cluster=ClusterConfig(workers=n, threads=1, object_store_mb=256))
        rates[n] = throughput(cfg, args, f"cluster, {n} worker(s)")
    print(
        f"throughput ratio: 2 workers / 1 worker = {rates[2] / rates[1]:.2f}; "
        f"1 worker / single process = {rates[1] / rates['single']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
