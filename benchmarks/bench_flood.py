"""Memory under a flood: the peak RSS of a real `ganpaint serve` process hit at once by many
maximum-size requests (8192×2048 RGBA u16: 128 MiB of pixels plus a 16 MiB mask each).

Starts the server (default model, loaded by a small warm-up job, torch on 1 thread), resets
the process's peak RSS (``/proc/PID/clear_refs``), then sends N edits at once over C
connections, heartbeats every accepted job until its final reply, and reads the server's
peak RSS (``VmHWM``). Each flood: how many were accepted, how many refused ``busy``, and the
peak. Past the server's connection cap (``max_connections``) a flooding connection's
handshake is refused (its requests never leave this process): they count as "refused".
Linux only (reads /proc).

    python benchmarks/bench_flood.py [--requests 20] [--connections 20 1] [--selection box]

``--selection box`` edits a 1024×1024 square (what a photographer selects); ``full``
selects the whole frame. ``--hold`` keeps the worker busy with a long small job during the
flood and cancels everything after it, so the peak is the server's own holding of requests
(queue, byte budget, libzmq's read-ahead) without a max-size job running; without it the
accepted edits run, and the running job's compositing adds its own peak. Each request is
an upload (docs/protocol.md §3a): its header first, its pixels in chunks as the server
grants credit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

W, H = 8192, 2048
MIB = 1024 * 1024


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pixels(selection: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, (H, W, 4), dtype=np.uint16)
    mask = np.zeros((H, W), np.uint8)
    if selection == "full":
        mask[:] = 255
    else:
        mask[H // 2 - 512 : H // 2 + 512, W // 2 - 512 : W // 2 + 512] = 255
    return img, mask


class Flood:
    """C DEALER sockets sending N edits between them, then heartbeating accepted jobs."""

    def __init__(self, endpoint: str, connections: int, control: bool):
        self.ctx = zmq.Context()
        self.control = None
        if control:
            # Cancels go on their own connection (by job id, which any connection may use),
            # not behind the big frames queued on the flooding ones; it connects first, so
            # that it holds a slot under the server's connection cap.
            self.control = self.ctx.socket(zmq.DEALER)
            self.control.linger = 0
            self.control.connect(endpoint)
            self.control.send(msgpack.packb({"v": 2, "kind": "hello", "id": "h"}))
            if not self.control.poll(60_000):
                raise RuntimeError("the server does not answer the control connection")
            self.control.recv_multipart()
        self.socks, self.monitors = [], []
        for _ in range(connections):
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            self.monitors.append(s.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH))
            s.connect(endpoint)
            self.socks.append(s)

    def refused(self) -> set[int]:
        """Indices of the sockets whose handshake the server refused (at its cap)."""
        return {i for i, m in enumerate(self.monitors) if m.poll(0) and recv_monitor_message(m)}

    def run(self, n: int, img: np.ndarray, mask: np.ndarray, steps: int, hold: bool) -> dict:
        from ganpaint.server.client.ganpaint_client import Chunked

        header = {
            "v": 2,
            "kind": "edit",
            "upload": True,
            "op": "remove",
            "units": [3, 5],
            "steps": steps,
            "image": {"width": W, "height": H, "channels": 4, "dtype": "u16"},
            "mask": {"width": W, "height": H, "channels": 1, "dtype": "u8"},
        }
        frames = [memoryview(img).cast("B"), memoryview(mask).cast("B")]  # not copied
        sent = [0] * len(self.socks)
        uploads: dict[str, Chunked] = {}  # request id -> its pixels, sent as credit comes
        for i in range(n):
            rid = uuid.uuid4().hex
            h = msgpack.packb({**header, "id": rid}, use_bin_type=True)
            k = i % len(self.socks)
            try:  # a socket refused already has no connection: NOBLOCK instead of waiting
                self.socks[k].send_multipart([h], zmq.NOBLOCK)
                sent[k] += 1
                uploads[rid] = Chunked(frames)
            except zmq.Again:
                pass
        jobs: dict[str, zmq.Socket] = {}
        outcome = {
            "accepted": 0,
            "busy": 0,
            "refused": n - sum(sent),
            "refused_connections": 0,
            "results": 0,
            "other": 0,
            "busy_message": "",
        }
        answered, last_beat = outcome["refused"], 0.0
        refused: set[int] = set()
        poller = zmq.Poller()
        for s in self.socks:
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + 1800
        while (answered < n or jobs) and time.monotonic() < deadline:
            for k in self.refused() - refused:  # its requests were dropped unsent
                refused.add(k)
                answered += sent[k]
                outcome["refused"] += sent[k]
                outcome["refused_connections"] += 1
            for s, _ in poller.poll(200):
                parts = s.recv_multipart(copy=False)
                reply = msgpack.unpackb(parts[0].bytes, raw=False)
                kind = reply["kind"]
                if kind in ("upload", "credit"):  # the server grants chunks: send them
                    up = uploads[reply["id"]]
                    for index, data in up.granted(reply):
                        chunk = {"v": 2, "kind": "chunk", "id": reply["id"], "upload": up.id}
                        chunk["index"] = index
                        s.send_multipart([msgpack.packb(chunk, use_bin_type=True), data])
                elif kind == "accepted":
                    answered += 1
                    outcome["accepted"] += 1
                    jobs[reply["job"]] = s
                    if hold:  # queued behind the long job: cancel it before it can run
                        cancel = {"v": 2, "kind": "cancel", "id": "c", "job": reply["job"]}
                        self.control.send_multipart([msgpack.packb(cancel, use_bin_type=True)])
                elif kind == "error" and reply["error"]["code"] == "busy" and "job" not in reply:
                    answered += 1
                    outcome["busy"] += 1
                    outcome["busy_message"] = reply["error"]["message"]
                elif kind in ("result", "error"):
                    outcome["results" if kind == "result" else "other"] += 1
                    jobs.pop(reply.get("job"), None)
            now = time.monotonic()
            if now - last_beat > 0.5:
                last_beat = now
                for job, s in jobs.items():
                    beat = {"v": 2, "kind": "heartbeat", "id": "beat", "job": job}
                    s.send_multipart([msgpack.packb(beat, use_bin_type=True)])
        return outcome

    def close(self) -> None:
        for s in self.socks:
            s.disable_monitor()
        for s in [*self.monitors, *self.socks, self.control]:
            if s is not None:
                s.close(0)
        self.ctx.term()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--connections", type=int, nargs="+", default=[20, 1])
    ap.add_argument("--selection", choices=["box", "full"], default="box")
    ap.add_argument("--steps", type=int, default=2, help="G′ steps of each accepted edit")
    ap.add_argument("--hold", action="store_true", help="no max-size job runs (see above)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--max-connections", type=int, help="the server's cap (default: its own)")
    ap.add_argument("--max-pending-mb", type=int, help="the server's byte budget")
    args = ap.parse_args()
    limits = []
    if args.max_connections is not None:
        limits += ["--max-connections", str(args.max_connections)]
    if args.max_pending_mb is not None:
        limits += ["--max-pending-mb", str(args.max_pending_mb)]

    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="ganpaint-flood-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "ganpaint.server.cli", "serve", "--bind", endpoint]
        + ["--steps", "2", "--invert-steps", "4", "--threads", "1", "--no-download", *limits],
        stderr=log,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    img, mask = pixels(args.selection)
    report: dict = {"image": f"{W}x{H} RGBA u16", "selection": args.selection, "floods": []}
    small = np.full((64, 64, 3), 128, np.uint8)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from ganpaint.server.client.ganpaint_client import Client, RawImage

        with Client(endpoint, timeout_s=120.0, retries=1) as c:  # loads the model
            info = c.hello()
            c.reconstruct(RawImage(small.tobytes(), 64, 64, 3, "u8"), steps=1)
        report["max_pending_bytes"] = info["limits"].get("max_pending_bytes")
        report["max_connections"] = info["limits"].get("max_connections")
        report["rss_model_loaded_mib"] = round(proc_kib(server.pid, "VmRSS") / 1024)
        for conns in args.connections:
            holder = Client(endpoint, timeout_s=120.0, retries=1) if args.hold else None
            if holder is not None:  # submit a long small job; it keeps the worker busy
                holder._send(
                    {
                        "kind": "reconstruct",
                        "id": "hold",
                        "steps": 10000,
                        "image": {"width": 64, "height": 64, "channels": 3, "dtype": "u8"},
                    },
                    [small.tobytes()],
                )
                hold_job = holder._recv("hold", 60)[0]["job"]
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # resets VmHWM
            flood = Flood(endpoint, conns, control=args.hold)
            t0 = time.monotonic()
            try:
                outcome = flood.run(args.requests, img, mask, args.steps, args.hold)
            finally:
                flood.close()
                if holder is not None:
                    holder.cancel(hold_job)
                    holder.close()
            outcome.update(
                connections=conns,
                requests=args.requests,
                seconds=round(time.monotonic() - t0, 1),
                peak_rss_mib=round(proc_kib(server.pid, "VmHWM") / 1024),
                rss_after_mib=round(proc_kib(server.pid, "VmRSS") / 1024),
            )
            report["floods"].append(outcome)
            if not args.json:
                print(
                    f"{'held: ' if args.hold else ''}"
                    f"{args.requests} × {W}x{H} RGBA u16 over {conns} connection(s): "
                    f"{outcome['accepted']} accepted ({outcome['results']} results), "
                    f"{outcome['busy']} busy, {outcome['refused']} refused "
                    f"({outcome['refused_connections']} connections); "
                    f"peak RSS {outcome['peak_rss_mib']} MiB "
                    f"(model loaded: {report['rss_model_loaded_mib']} MiB, after: "
                    f"{outcome['rss_after_mib']} MiB), {outcome['seconds']} s",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(60)
    if args.json:
        print(json.dumps(report, indent=1))
    elif report["floods"]:
        print(f"busy says: {report['floods'][-1]['busy_message']}")
        print(f"server log: {log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
