"""The connection cap (server/connections.py) on a real server: past ``max_connections`` a
handshake is refused, so a flood over many connections cannot make libzmq hold a whole
message for each; a refused ganpaint_client.py waits, saying so, and is served once a slot frees.

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

from ganpaint.server.client.ganpaint_client import (
    Client,
    CurveKeys,
    RawImage,
    ServerError,
    ServerUnavailable,
)
from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.security import curve_files, make_keys
from ganpaint.server.testing import running_server

DEADLINE_S = 60.0


def wait_until(cond, what: str, state=lambda: None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what} ({state()})"
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
        # ganpaint_client.py says why instead of "nothing answers".
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
        assert b.hello()["protocol"] == 2  # the admitted ones are still served
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
            assert a.hello()["protocol"] == 2
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
            assert b.hello()["protocol"] == 2


def test_serve_flags_set_the_memory_limits():
    from ganpaint.server.cli.main import UserError, build_parser
    from ganpaint.server.cli.serve import config_from_args

    parse = build_parser().parse_args
    lim = config_from_args(parse(["serve"])).limits
    assert (lim.max_pending_bytes, lim.max_connections) == (512 << 20, 128)
    lim = config_from_args(parse(["serve", "--max-pending-mb", "100", "--max-connections", "2"]))
    assert (lim.limits.max_pending_bytes, lim.limits.max_connections) == (100 << 20, 2)
    for flag in ("--max-pending-mb", "--max-connections"):
        with pytest.raises(UserError, match=flag):
            config_from_args(parse(["serve", flag, "0"]))


def established(port: int) -> int:
    """The server side's open TCP connections on ``port``, as the kernel lists them (the
    truth the gate's count is checked against; Linux)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            # ESTABLISHED, or CLOSE_WAIT: closed by the peer, not yet by the server
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                count += 1
    return count


HOLDER = """
import sys, time, zmq
ctx = zmq.Context()
socks = []
for _ in range(int(sys.argv[2])):
    s = ctx.socket(zmq.DEALER)
    s.connect(sys.argv[1])
    s.send(b"\\x81\\xa4kind\\xa5hello")
    socks.append(s)
print("up", flush=True)
sys.stdin.read()  # until the test ends, or dies: never left behind
"""


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_the_live_count_is_the_kernels_over_a_long_random_sequence(tmp_path, monkeypatch):
    """400 random steps: connect (with or without a routing id, some sending hello), close,
    hand a routing id over to a new socket, handshake and close at once, kill -9 a process
    holding connections. After every 50 steps the gate's count of live connections settles
    at or below the kernel's count of the server's open connections: it never holds a slot
    for a connection that is gone, also once every client has gone (libzmq may keep a
    connection whose routing id was handed over open on its side, unread)."""
    import random
    import subprocess
    import sys

    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path))
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", limits=Limits(max_connections=1000))
    rng = random.Random(26)
    with running_server(cfg, log=lambda line: None) as srv:
        ep, port = srv.endpoint, int(srv.endpoint.rsplit(":", 1)[1])
        ctx = zmq.Context()
        socks: list[tuple[zmq.Socket, bytes | None]] = []
        procs: list[subprocess.Popen] = []

        def connect(identity: bytes | None) -> zmq.Socket:
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            if identity is not None:
                s.setsockopt(zmq.ROUTING_ID, identity)
            s.connect(ep)
            if rng.random() < 0.5:
                s.send(msgpack.packb({"v": 1, "kind": "hello", "id": "h"}))
            return s

        def settled() -> bool:
            return srv._gate.live() <= established(port)

        try:
            for step in range(400):
                op = rng.random()
                if op < 0.4 or not socks:
                    identity = b"gp" + rng.randbytes(16) if rng.random() < 0.5 else None
                    socks.append((connect(identity), identity))
                elif op < 0.65:
                    s, _ = socks.pop(rng.randrange(len(socks)))
                    s.close(0)
                elif op < 0.8:
                    named = [i for i, (_, ident) in enumerate(socks) if ident is not None]
                    if named:  # a client reopening its socket with the same routing id
                        i = rng.choice(named)
                        old, ident = socks[i]
                        socks[i] = (connect(ident), ident)
                        if rng.random() < 0.5:
                            old.close(0)
                        else:
                            socks.append((old, None))
                elif op < 0.95:
                    s = connect(None)  # handshakes and is gone
                    s.close(0)
                elif len(procs) < 4:
                    p = subprocess.Popen(
                        [sys.executable, "-c", HOLDER, ep, str(rng.randint(1, 3))],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                    assert p.stdout.readline().strip() == b"up"
                    procs.append(p)
                else:
                    p = procs.pop(rng.randrange(len(procs)))
                    p.kill()  # kill -9: no goodbye
                    p.wait()
                if step % 50 == 49:
                    what = f"the count to settle after step {step}"
                    wait_until(settled, what, lambda: (srv._gate.live(), established(port)))
            for s, _ in socks:
                s.close(0)
            for p in procs:
                p.kill()
                p.wait()
            wait_until(settled, "the count to settle once every client has gone")
        finally:
            for s, _ in socks:
                s.close(0)
            for p in procs:
                p.kill()
            ctx.term()


def test_routing_ids_in_zeromqs_range_are_refused(capped):
    """A client-chosen routing id that starts with a zero byte gets bad_request and nothing
    is done; libzmq's own (b"\\0" + 4 bytes, for clients that set none) works as before."""
    ctx = zmq.Context()
    try:
        for identity, ok in ((b"\0" + bytes(range(1, 17)), False), (None, True)):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            if identity is not None:
                s.setsockopt(zmq.ROUTING_ID, identity)
            s.connect(capped.endpoint)
            s.send(msgpack.packb({"v": 1, "kind": "status", "id": "s"}))
            assert s.poll(int(DEADLINE_S * 1000))
            reply = msgpack.unpackb(s.recv(), raw=False)
            if ok:
                assert reply["kind"] == "status"
            else:
                assert reply["kind"] == "error" and reply["error"]["code"] == "bad_request"
                assert "zero byte" in reply["error"]["message"]
            s.close(0)
            wait_until(lambda: capped._gate.live() == 0, "the slot to free")
    finally:
        ctx.term()


def test_fifty_clients_idle_or_asking_are_all_served(tmp_path, monkeypatch):
    """The default server with 50 connections open: half of them idle, half asking hello and
    status. Every question is answered, none is refused, and one more client is served."""
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path))
    with running_server(ServerConfig(bind="tcp://127.0.0.1:*"), log=lambda line: None) as srv:
        ctx = zmq.Context()
        socks = []
        try:
            for i in range(50):
                s = ctx.socket(zmq.DEALER)
                s.linger = 0
                s.setsockopt(zmq.ROUTING_ID, b"gp-%02d-" % i + bytes(16))
                s.connect(srv.endpoint)
                socks.append(s)
            asking = socks[::2]
            for rounds in range(3):
                for i, s in enumerate(asking):
                    kind = ("hello", "status")[(i + rounds) % 2]
                    s.send(msgpack.packb({"v": 2, "kind": kind, "id": f"{kind}-{i}"}))
                for i, s in enumerate(asking):
                    assert s.poll(int(DEADLINE_S * 1000)), f"client {i} got no answer"
                    reply = msgpack.unpackb(s.recv(), raw=False)
                    assert reply["kind"] in ("hello", "status") and reply["id"].endswith(f"-{i}")
            with Client(srv.endpoint, timeout_s=10.0, retries=1) as late:
                assert late.hello()["limits"]["max_connections"] == 128
                wait_until(lambda: srv._gate.live() == 51, "every socket to connect")
                assert late.status()["connections"] == {"live": 51, "max": 128, "refused": 0}
        finally:
            for s in socks:
                s.close(0)
            ctx.term()
