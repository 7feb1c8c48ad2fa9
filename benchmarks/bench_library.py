"""A large concept library on a live server: what a `concepts` request and an edit naming a
concept cost, and whether other clients wait meanwhile.

Imports N generated concepts (default 20 000, the library's bound) for the default model into
a temporary data folder, runs an in-process server and measures through the real client:

- `concepts`: the first request after start and a repeated one (the library unchanged);
- hello: another client's hello sent while a `concepts` request is in flight (the socket
  thread's stall, if any);
- edit: an edit naming one of the concepts (1 G′ step), time to `accepted` and to the result;
- after a change: the same `concepts` request once the library file changed (a reload).

    python benchmarks/bench_library.py [--concepts 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ganpaint.core.concepts.files import atomic_write_json
from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.generators import DEFAULT_MODEL
from ganpaint.server.client.ganpaint_client import Client, RawImage
from ganpaint.server.config import ServerConfig
from ganpaint.server.testing import running_server

LAYER = "layer2"  # the default model's edit layer (256 units)


def concepts_file(path: Path, n: int, seed: int = 0) -> None:
    """n learned-style concepts: 15 ranked units with values and scores, a description."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        units = rng.sample(range(256), 15)
        items.append(
            {
                "name": f"imported {i:05d}",
                "model": DEFAULT_MODEL,
                "layer": LAYER,
                "units": units,
                "values": [round(rng.uniform(0.5, 3.0), 4) for _ in units],
                "scores": [round(rng.uniform(0.0, 1.0), 4) for _ in units],
                "source": "learned",
                "created": "2026-01-01T00:00:00Z",
                "description": f"learned from photo {i} of a shared studio set " * 3,
            }
        )
    data = {"format": "ganpaint-concepts", "version": 1, "model": DEFAULT_MODEL}
    atomic_write_json(path, {**data, "concepts": items})


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def hello_during(endpoint: str, slow) -> tuple[float, float]:
    """(seconds of ``slow()``, seconds of another client's hello sent just after it began)."""
    out: dict = {}

    def run() -> None:
        out["slow"] = timed(slow)[0]

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.05)
    with Client(endpoint, timeout_s=600.0, retries=1) as other:
        hello_s = timed(other.hello)[0]
    t.join()
    return out["slow"], hello_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=20_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ganpaint-bench-library-") as tmp:
        os.environ["GANPAINT_DATA"] = str(Path(tmp) / "data")
        share = Path(tmp) / "share.json"
        concepts_file(share, args.concepts)
        rows["file_mb"] = share.stat().st_size / 1e6
        lib = ConceptLibrary(DEFAULT_MODEL)
        rows["import_s"] = timed(lambda: lib.import_file(share))[0]
        rows["library_mb"] = lib.user_path.stat().st_size / 1e6
        cfg = ServerConfig(bind="tcp://127.0.0.1:*", steps=1, invert_steps=2, quality="fast")
        with running_server(cfg, log=lambda line: None) as srv:
            with Client(srv.endpoint, timeout_s=600.0, retries=1) as c:
                rows["hello_idle_s"] = timed(c.hello)[0]
                listing = lambda: c.concepts()  # noqa: E731
                rows["concepts_first_s"], rows["hello_during_concepts_s"] = hello_during(
                    srv.endpoint, listing
                )
                rows["concepts_again_s"], listed = timed(listing)
                rows["listed"] = len(listed)
                img = np.full((32, 32, 3), 120, np.uint8)
                mask = np.zeros((32, 32), np.uint8)
                mask[8:24, 8:24] = 255
                marks: list[float] = []

                def edit() -> dict:
                    return c.edit(
                        RawImage(img.tobytes(), 32, 32, 3, "u8"),
                        RawImage(mask.tobytes(), 32, 32, 1, "u8"),
                        op="add",
                        concept="imported 12345",
                        progress=lambda p: marks.append(time.perf_counter()),
                    )

                c.edit(  # the model loads: kept out of the timings
                    RawImage(img.tobytes(), 32, 32, 3, "u8"),
                    RawImage(mask.tobytes(), 32, 32, 1, "u8"),
                    op="add",
                    units=[1],
                )
                t0 = time.perf_counter()
                rows["edit_s"], rows["hello_during_edit_s"] = hello_during(srv.endpoint, edit)
                rows["edit_accepted_s"] = marks[0] - t0
                os.utime(lib.user_path)  # the file changed: the next listing reloads it
                rows["concepts_after_change_s"] = timed(listing)[0]
    rows = {k: round(v, 3) if isinstance(v, float) else v for k, v in rows.items()}
    if args.json:
        print(json.dumps(rows))
    else:
        for k, v in rows.items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
