"""The connection cap (server/connections.py) on a real server: past ``max_connections`` a
handshake is refused, so a flood over many connections cannot make libzmq hold a whole
message for each; a refused client.py waits, saying so, and is served once a slot frees.

No timing assertions: the waits have generous deadlines only so that a bug fails instead of
hanging.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from ganpaint.server.client import Client, CurveKeys, RawImage, ServerError, ServerUnavailable
from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.security import curve_files, make_keys
from ganpaint.server.testing import running_server

DEADLINE_S = 60.0


def wait_until(cond, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def refused_handshake(endpoint: str, header: dict) -> int:
    """Send one request from a raw DEALER; the status of its refused handshake, and check
    that no reply came."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        sock.connect(endpoint)
        sock.send(msgpack.packb(header, use_bin_type=True))
        assert mon.poll(int(DEADLINE_S * 1000)), "the handshake was neither refused nor done"
        status = recv_monitor_message(mon)["value"]
        assert not sock.poll(200), "a refused connection got a reply"
        return status
    finally:
        sock.disable_monitor()
        mon.close(0)
        sock.close(0)
        ctx.term()


@pytest.fixture
def capped(tmp_path, monkeypatch):
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*", steps=2, invert_steps=4, limits=Limits(max_connections=2)
    )
    lines: list[str] = []
    with running_server(cfg, log=lines.append) as srv:
        srv.lines = lines
        yield srv
    torch.set_num_threads(threads)


def test_past_the_cap_connections_are_refused_and_a_freed_slot_admits_a_waiting_client(capped):
    ep = capped.endpoint
    a, b = Client(ep, timeout_s=10.0), Client(ep, timeout_s=10.0)
    try:
        assert a.hello()["limits"]["max_connections"] == 2
        assert b.status()["connections"] == {"live": 2, "max": 2, "refused": 0}
        # A third connection gets no handshake, so it cannot send a byte of its request.
        assert refused_handshake(ep, {"v": 1, "kind": "hello", "id": "x"}) == 500
        assert capped._gate.refused == 1
        assert any("refusing connections" in line for line in capped.lines)
        # client.py says why instead of "nothing answers".
        with Client(ep, timeout_s=0.3, retries=1) as c:
            with pytest.raises(ServerError) as e:
                c.hello()
        assert e.value.code == "busy" and "as many clients as it allows" in e.value.message
        # A client that waits: it reports it, knocks again, and runs its job once a slot frees.
        img = np.full((16, 16, 3), 100, np.uint8)
        seen: list[dict] = []
        out: dict = {}

        def waiting() -> None:
            with Client(ep, timeout_s=30.0) as w:
                w._limits = {}  # no hello first: the job is its first request
                out["result"] = w.reconstruct(
                    RawImage(img.tobytes(), 16, 16, 3, "u8"), steps=2, progress=seen.append
                )

        t = threading.Thread(target=waiting)
        refused = capped._gate.refused
        t.start()
        wait_until(lambda: capped._gate.refused > refused + 1, "the waiting client to knock")
        assert "result" not in out and seen[0]["stage"] == "connecting"
        assert b.hello()["protocol"] == 1  # the admitted ones are still served
        a.close()
        t.join(DEADLINE_S)
        assert not t.is_alive()
        assert out["result"]["image"].width == 16
        assert [p["stage"] for p in seen].count("connecting") == 1
        wait_until(lambda: capped._gate.live() == 1, "the waiting client's slot to free")
    finally:
        a.close()
        b.close()


def test_the_cap_holds_under_curve_and_unknown_keys_are_told_apart(tmp_path: Path):
    make_keys(tmp_path)
    cfg = ServerConfig(
        bind="tcp://0.0.0.0:*",
        allow_remote=True,
        curve=curve_files(tmp_path),
        limits=Limits(max_connections=1),
    )
    keys = CurveKeys.from_files(tmp_path / "server.key", tmp_path / "client.key_secret")
    with running_server(cfg, log=lambda line: None) as srv:
        ep = f"tcp://127.0.0.1:{srv.endpoint.rsplit(':', 1)[1]}"
        with Client(ep, timeout_s=10.0, curve=keys) as a:
            assert a.hello()["protocol"] == 1
            with Client(ep, timeout_s=0.5, retries=1, curve=keys) as b:  # authorised, no slot
                with pytest.raises(ServerError) as e:
                    b.hello()
            assert e.value.code == "busy"
            stranger = CurveKeys(keys.server_public, *zmq.curve_keypair())
            with Client(ep, timeout_s=0.5, retries=1, curve=stranger) as s:
                with pytest.raises(ServerUnavailable) as e:
                    s.hello()
            assert "key" in e.value.message
            assert srv._gate.refused >= 1
        wait_until(lambda: srv._gate.live() == 0, "a's slot to free")
        with Client(ep, timeout_s=10.0, curve=keys) as b:
            assert b.hello()["protocol"] == 1


def test_serve_flags_set_the_memory_limits():
    from ganpaint.server.cli import UserError, build_parser
    from ganpaint.server.cli_serve import config_from_args

    parse = build_parser().parse_args
    lim = config_from_args(parse(["serve"])).limits
    assert (lim.max_pending_bytes, lim.max_connections) == (512 << 20, 3)
    lim = config_from_args(parse(["serve", "--max-pending-mb", "100", "--max-connections", "2"]))
    assert (lim.limits.max_pending_bytes, lim.limits.max_connections) == (100 << 20, 2)
    for flag in ("--max-pending-mb", "--max-connections"):
        with pytest.raises(UserError, match=flag):
            config_from_args(parse(["serve", flag, "0"]))
