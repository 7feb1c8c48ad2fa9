"""A malformed-message fuzzer for the edit server: N messages, each must earn exactly one
error reply with a stable code other than `internal`, and the server must go on serving.

The messages are tests/test_server_fuzz.py's malformations (random bytes, wrong types,
missing fields, bad images, truncated multipart, oversize headers, …) plus the upload
surface: chunks naming unknown, foreign or finished uploads, out of order, of the wrong size
or type; upload starts with bad fields; wrong `session` names; routing ids that start with a
zero byte. A message with a frame over ``max_message_bytes`` gets no reply: libzmq drops its
connection (docs/protocol.md §1); those go on a socket of their own and are counted as
dropped. Prints counts per error code, `internal` replies, missing or extra replies, and
whether hello and a real edit still work afterwards.

    python benchmarks/fuzz_server.py [--messages 12000] [--seed 26]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import torch
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ganpaint.server.client.ganpaint_client import Client, RawImage, ServerError  # noqa: E402
from ganpaint.server.config import Limits, ServerConfig  # noqa: E402
from ganpaint.server.protocol import ERROR_CODES  # noqa: E402
from ganpaint.server.testing import running_server  # noqa: E402
from tests.test_server_fuzz import H, W, malformed, valid  # noqa: E402

CHUNK = 256  # the fuzzed server's chunk size: 16x12 RGBA + mask is an upload


def upload_message(rng: random.Random, upload_id: str | None) -> list[bytes]:
    """A malformed chunk or upload start."""
    how = rng.randrange(8)
    if how < 4:
        index = rng.choice([0, 1, 5, 10**6, -1, "0", 1.5, None])
        chunk = {"v": 2, "kind": "chunk", "id": "c", "index": index}
        chunk["upload"] = rng.choice([upload_id, "nope", "", 5, None, "u" * 65])
        data = rng.choice([b"", bytes(CHUNK), bytes(CHUNK + 1), bytes(7)])
        frames = rng.choice([[data], [], [data, data]])
        return [msgpack.packb({k: v for k, v in chunk.items() if v is not None}), *frames]
    header, frames = valid(rng, rng.choice(["edit", "reconstruct", "learn_concept"]))
    header["upload"] = rng.choice([True, 1, "yes", None])
    if how == 4:
        header["session"] = rng.choice(["short", 5, b"x" * 20, "s" * 65, "\n" * 20])
    elif how == 5:
        header["image"] = {**header["image"], "width": rng.choice([0, 10**9, "16"])}
    send = frames if rng.random() < 0.5 else []  # an upload start carries no frames
    return [msgpack.packb({k: v for k, v in header.items() if v is not None}), *send]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=12_000)
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument(
        "--upload-share",
        type=float,
        default=0.25,
        help="share of upload messages (a finished upload's job replies count as missing ones)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    os.environ["GANPAINT_DATA"] = tempfile.mkdtemp(prefix="ganpaint-fuzz-")
    limits = Limits(max_side=256, max_pixels=64 * 64, max_queue=1, chunk_bytes=CHUNK)
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", steps=1, invert_steps=2, limits=limits)
    codes: dict[str, int] = {}
    missing = extra = 0
    with running_server(cfg, log=lambda line: None) as srv:
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.setsockopt(zmq.ROUTING_ID, b"fz" + rng.randbytes(16))
        dealer.connect(srv.endpoint)
        zero = ctx.socket(zmq.DEALER)  # a routing id in libzmq's range
        zero.linger = 0
        zero.setsockopt(zmq.ROUTING_ID, b"\0" + rng.randbytes(16))
        zero.connect(srv.endpoint)
        big = ctx.socket(zmq.DEALER)  # frames over max_message_bytes: dropped by libzmq
        big.linger = 0
        big.connect(srv.endpoint)
        most = limits.max_message_bytes()
        dropped = 0
        # One open upload of this connection, so that chunks can name a real one.
        head, frames = valid(rng, "edit")
        dealer.send(msgpack.packb({**head, "id": "open", "upload": True}))
        assert dealer.poll(30_000)
        upload_id = msgpack.unpackb(dealer.recv(), raw=False)["upload"]
        sent = 0
        while sent < args.messages:
            batch = []
            for _ in range(min(50, args.messages - sent)):
                pick = rng.random()
                if pick < args.upload_share:
                    batch.append((dealer, upload_message(rng, upload_id)))
                elif pick < args.upload_share + 0.05:
                    h, f = valid(rng, "hello")
                    batch.append((zero, [msgpack.packb(h), *f]))
                else:
                    batch.append((dealer, malformed(rng, rng.randrange(10**6))))
            oversize = [b for b in batch if max(len(p) for p in b[1]) > most]
            batch = [b for b in batch if b not in oversize]
            for _sock, parts in oversize:
                big.send_multipart(parts)
                dropped += 1
            for sock, parts in batch:
                sock.send_multipart(parts)
            for sock, _parts in batch:
                if not sock.poll(5_000):
                    missing += 1
                    continue
                reply = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
                kind = reply.get("kind")
                code = reply["error"]["code"] if kind == "error" else f"<{kind}>"
                codes[code] = codes.get(code, 0) + 1
            sent += len(batch) + len(oversize)
            while dealer.poll(0) or zero.poll(0):
                (dealer if dealer.poll(0) else zero).recv_multipart()
                extra += 1
        alive = not srv.wait_stopped(0)
        dealer.close(0)
        zero.close(0)
        big.close(0)
        ctx.term()
        with Client(srv.endpoint, timeout_s=30.0) as c:
            hello_ok = c.hello()["protocol"] == 2
            img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
            mask = np.zeros((H, W), np.uint8)
            mask[3:7, 4:9] = 255
            for _ in range(120):  # the fuzz's own valid jobs may still fill the queue
                try:
                    res = c.edit(
                        RawImage(img.tobytes(), W, H, 3, "u8"),
                        RawImage(mask.tobytes(), W, H, 1, "u8"),
                        op="remove",
                        units=[1],
                    )
                    break
                except ServerError as e:
                    if e.code != "busy":
                        raise
                    time.sleep(0.5)
            edit_ok = res["image"].width == W
            bad = c.status()["counts"]["bad_requests"]
    unknown = sorted(k for k in codes if k not in ERROR_CODES)
    print(f"messages {sent}, seed {args.seed}, run {uuid.uuid4().hex[:6]}")
    print(f"replies by code: {dict(sorted(codes.items()))}")
    print(
        f"internal: {codes.get('internal', 0)}; missing replies: {missing}; extra: {extra}; "
        f"oversize, dropped by libzmq without a reply: {dropped}"
    )
    print(f"non-error replies: {unknown}; server alive: {alive}; hello after: {hello_ok}; ")
    print(f"an edit after: {edit_ok}; bad_requests counted by the server: {bad}")
    return 0 if alive and hello_ok and edit_ok and not codes.get("internal") else 1


if __name__ == "__main__":
    sys.exit(main())
