"""Bad input never stops the server: 1 200 malformed requests (random bytes, wrong types,
wrong shapes, bad lengths, truncated multipart, oversize) each get exactly one error reply
with a stable code; oversize frames, half-sent messages and non-ZeroMQ garbage only cost
their sender its connection; afterwards hello and a real job still work.
"""

from __future__ import annotations

import random
import socket
import uuid

import msgpack
import numpy as np
import pytest
import torch
import zmq

from ganpaint.server.client.ganpaint_client import Client, RawImage
from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.protocol import ERROR_CODES
from ganpaint.server.testing import running_server

N_MESSAGES = 1200
W, H = 16, 12


@pytest.fixture(scope="module")
def server():
    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*",
        steps=1,
        invert_steps=2,
        limits=Limits(max_side=256, max_pixels=64 * 64, max_queue=1, chunk_bytes=32 * 1024),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with running_server(cfg, log=lambda line: None) as srv:
        yield srv
    torch.set_num_threads(threads)


def pixels(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def valid(rng: random.Random, kind: str) -> tuple[dict, list[bytes]]:
    mask = bytearray(W * H)
    mask[rng.randrange(W * H)] = 255
    image = {"width": W, "height": H, "channels": 4, "dtype": "u8"}
    base = {"v": 1, "kind": kind, "id": uuid.uuid4().hex}
    if kind not in ("cancel", "heartbeat"):
        base["model"] = "digiface-dcgan64"
    if kind == "edit":
        base |= {
            "op": "add",
            "units": [1, 2],
            "image": image,
            "mask": {"width": W, "height": H, "channels": 1, "dtype": "u8"},
        }
        return base, [pixels(rng, W * H * 4), bytes(mask)]
    if kind == "reconstruct":
        return base | {"image": image, "steps": 3}, [pixels(rng, W * H * 4)]
    if kind == "learn_concept":
        base |= {
            "name": "thing",
            "image": image,
            "mask": {"width": W, "height": H, "channels": 1, "dtype": "u8"},
        }
        return base, [pixels(rng, W * H * 4), bytes(mask)]
    if kind in ("cancel", "heartbeat"):
        return base | {"job": "j-1"}, []
    return base, []


def wrong_value(rng: random.Random, field: str):
    choices = {
        "steps": ["20", 1.5, True, -1, 0, 2**40, b"\x01", [20]],
        "units": [[], [-1], ["1"], 3, [1, 1], {"1": 1}, [2**40], [True], [1.0]],
        "op": ["paint", 1, "", b"add", ["add"]],
        "job": [1, b"j", "", "j" * 65, ["j"]],
        "name": ["", "../etc", "a\nb", 5, "x" * 65],
        "id": [5, b"id", "i" * 65, ["id"]],
        "image": [5, "img", [16, 12, 4, "u8"], {}],
        "mask": [5, "mask", [16, 12, 1, "u8"], {}],
        "kind": [5, b"edit", "", "EDIT", "explode", ["edit"]],
        "model": [5, "", "stylegan9", b"m"],
        "v": [0, 3, "1", 1.5, True, -1],
    }
    return rng.choice(choices.get(field, [object]))


def malformed(rng: random.Random, i: int) -> list[bytes]:
    """One message (frames) that must earn exactly one error reply."""
    how = i % 12
    kind = rng.choice(["edit", "reconstruct", "learn_concept", "cancel", "heartbeat", "concepts"])
    header, frames = valid(rng, kind)
    if how == 0:  # random bytes
        return [pixels(rng, rng.randrange(0, 300)), *frames[: rng.randrange(0, 3)]]
    if how == 1:  # msgpack that is not a map
        junk = rng.choice([1, "edit", None, [1, 2], b"\x00" * 10, 1.5, True, [[{"a": []}]]])
        return [msgpack.packb(junk), *frames]
    if how == 2:  # a field of the wrong type or value
        field = rng.choice(list(header))
        value = wrong_value(rng, field)
        if value is object:
            return [msgpack.packb({**header, "v": 99}), *frames]
        header[field] = value
    elif how == 3:  # a required field missing
        required = {
            "edit": ["kind", "v", "op", "image", "mask"],
            "reconstruct": ["image", "v"],
            "learn_concept": ["name", "image", "mask"],
            "cancel": ["job"],
            "heartbeat": ["job"],
            "concepts": ["kind", "v"],
        }[kind]
        del header[rng.choice(required)]
    elif how == 4 and "image" in header:  # bad image description
        meta = dict(header["image"])
        key = rng.choice(["width", "height", "channels", "dtype"])
        meta[key] = rng.choice(
            {
                "width": [0, -1, "16", 1.5],
                "height": [0, -3, None, [12]],
                "channels": [0, 2, 5, "4"],
                "dtype": ["f32", "u32", 8, ""],
            }[key]
        )
        header["image"] = {k: v for k, v in meta.items() if v is not None}
    elif how == 5 and frames:  # truncated multipart: frames missing or extra
        frames = frames[:-1] if rng.random() < 0.5 else [*frames, pixels(rng, 7)]
    elif how == 6 and frames:  # frame lengths off
        j = rng.randrange(len(frames))
        cut = rng.randrange(1, 9)
        frames[j] = frames[j][:-cut] if rng.random() < 0.5 else frames[j] + bytes(cut)
    elif how == 7 and "image" in header:  # too large (but a small message)
        header["image"] = {**header["image"], "width": rng.choice([257, 100, 5000])}
    elif how == 8:  # protocol versions and unknown kinds
        if rng.random() < 0.5:
            header["v"] = rng.choice([0, 3, 1000])
        else:
            header["kind"] = "".join(rng.choices("abcxyz_", k=rng.randrange(1, 12)))
    elif how == 9:  # headers msgpack refuses: int keys, huge, deep
        return [
            rng.choice(
                [
                    msgpack.packb({1: 2}),
                    msgpack.packb({"kind": "x" * 70000}),
                    b"\x91" * 3000,
                    b"\xdd\xff\xff\xff\xff",
                    b"\xdf\xff\xff\xff\xff",
                ]
            ),
            *frames,
        ]
    elif how == 10 and "mask" in header:  # an empty selection
        frames[1] = bytes(W * H)
    elif how == 11 and kind == "edit":  # both or neither of concept and units
        if rng.random() < 0.5:
            header["concept"] = "tree"
        else:
            del header["units"]
    else:  # fall back: an unknown kind
        header["kind"] = f"no_such_{i}"
    return [msgpack.packb(header, use_bin_type=True), *frames]


def test_malformed_messages_never_stop_the_server(server):
    rng = random.Random(1234)
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(server.endpoint)
    codes: dict[str, int] = {}
    sent = 0
    try:
        for start in range(0, N_MESSAGES, 50):  # pipelined in batches
            batch = [malformed(rng, i) for i in range(start, min(start + 50, N_MESSAGES))]
            for frames in batch:
                dealer.send_multipart(frames)
                sent += 1
            for frames in batch:
                assert dealer.poll(30_000), f"no reply to {frames[0][:80]!r}"
                header = msgpack.unpackb(dealer.recv_multipart()[0], raw=False)
                assert header["kind"] == "error", (frames[0][:200], header)
                code = header["error"]["code"]
                assert code in ERROR_CODES and code not in ("internal", "cancelled"), header
                codes[code] = codes.get(code, 0) + 1
        assert dealer.poll(200) == 0  # exactly one reply each
    finally:
        dealer.close(0)
    assert sent == N_MESSAGES and {"bad_request", "too_large", "unknown_model"} <= set(codes)

    # What only costs the sender its connection.
    for _ in range(3):  # a frame over MAXMSGSIZE
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(server.endpoint)
        s.send_multipart([msgpack.packb({"v": 1, "kind": "hello"}), bytes(200_000)])
        s.close(0)
    for _ in range(3):  # a multipart message never finished
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(server.endpoint)
        s.send(msgpack.packb({"v": 1, "kind": "hello"}), zmq.SNDMORE)
        s.close(0)
    port = int(server.endpoint.rsplit(":", 1)[1])
    for _ in range(10):  # not ZeroMQ at all
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(rng.randbytes(rng.randrange(1, 2000)))
    ctx.term()

    assert not server.wait_stopped(0)
    with Client(server.endpoint, timeout_s=10.0) as client:
        info = client.hello()
        assert info["protocol"] == 2 and info["limits"]["max_pixels"] == 64 * 64
        img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
        mask = np.zeros((H, W), np.uint8)
        mask[3:7, 4:9] = 255
        res = client.edit(
            RawImage(img.tobytes(), W, H, 3, "u8"),
            RawImage(mask.tobytes(), W, H, 1, "u8"),
            op="remove",
            units=[1],
        )
        out = np.frombuffer(res["image"].data, np.uint8).reshape(H, W, 3)
        assert np.array_equal(out[mask == 0], img[mask == 0])
        assert client.status()["counts"]["bad_requests"] >= N_MESSAGES
