"""`ganpaint serve` as a process: refuses unsafe binds, shuts down cleanly on signals; CURVE
for remote clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ganpaint.server.client.ganpaint_client import (
    Cancelled,
    Client,
    CurveKeys,
    RawImage,
    ServerUnavailable,
)
from ganpaint.server.config import ServerConfig
from ganpaint.server.security import curve_files
from ganpaint.server.testing import running_server

SERVE = [sys.executable, "-m", "ganpaint.server.cli", "serve"]
DEADLINE_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(SERVE + args, capture_output=True, text=True, timeout=DEADLINE_S)


@pytest.mark.parametrize(
    "args,words",
    [
        (["--bind", "tcp://0.0.0.0:5599"], "--allow-remote"),
        (["--bind", "tcp://*:5599"], "not a loopback address"),
        (["--bind", "tcp://0.0.0.0:5599", "--allow-remote"], "without encryption"),
    ],
)
def test_non_loopback_bind_is_refused(args, words):
    proc = run(args)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def wait_for_hello(address: str, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with Client(address, timeout_s=0.5, retries=1) as c:
                return c.hello()
        except ServerUnavailable:
            if time.monotonic() > deadline:
                raise


def test_sigterm_cancels_the_running_job_and_exits_0():
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [*SERVE, "--bind", address, "--invert-steps", "10", "--device", "cpu", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        wait_for_hello(address, proc)
        adapting = threading.Event()
        outcome: list[BaseException | dict] = []

        def job() -> None:
            img = RawImage(bytes(range(256)) * 12, 32, 24, 4, "u8")
            mask = RawImage(b"\xff" * (32 * 24), 32, 24, 1, "u8")
            with Client(address, timeout_s=10.0) as c:
                try:
                    outcome.append(
                        c.edit(
                            img,
                            mask,
                            op="remove",
                            units=[1],
                            steps=9000,
                            progress=lambda p: p["stage"] == "adapt" and adapting.set(),
                        )
                    )
                except BaseException as e:
                    outcome.append(e)
                finally:
                    adapting.set()  # also when it failed early: the asserts below say so

        t = threading.Thread(target=job)
        t.start()
        assert adapting.wait(DEADLINE_S) and not outcome, outcome
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        t.join(DEADLINE_S)
        assert isinstance(outcome[0], Cancelled) and "shutting down" in outcome[0].message
        assert "shutting down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_when_idle_exits_0():
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [*SERVE, "--bind", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_hello(address, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_remote_clients_need_curve_keys(tmp_path: Path):
    made = run(["--make-keys", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    cfg = ServerConfig(bind="tcp://0.0.0.0:*", allow_remote=True, curve=curve_files(tmp_path))
    with running_server(cfg, log=lambda line: None) as srv:
        address = f"tcp://127.0.0.1:{srv.endpoint.rsplit(':', 1)[1]}"
        keys = CurveKeys.from_files(tmp_path / "server.key", tmp_path / "client.key_secret")
        with Client(address, timeout_s=10.0, curve=keys) as c:
            assert c.hello()["protocol"] == 2
        with Client(address, timeout_s=0.5, retries=1) as c:  # no keys: no answer
            with pytest.raises(ServerUnavailable):
                c.hello()
        stranger = CurveKeys(keys.server_public, *__import__("zmq").curve_keypair())
        with Client(address, timeout_s=0.5, retries=1, curve=stranger) as c:  # not authorised
            with pytest.raises(ServerUnavailable):
                c.hello()


def test_under_curve_a_job_belongs_to_its_key(tmp_path: Path):
    """Two authorised keys: B names A's job in heartbeats and sees only errors, its status
    shows A's job under a label, and A gets its result."""
    import msgpack
    import numpy as np
    import zmq
    import zmq.auth

    made = run(["--make-keys", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    b_public, b_secret = zmq.auth.create_certificates(tmp_path, "b")
    (tmp_path / "clients" / "b.key").write_bytes(Path(b_public).read_bytes())
    cfg = ServerConfig(
        bind="tcp://0.0.0.0:*",
        allow_remote=True,
        curve=curve_files(tmp_path),
        steps=10,
        invert_steps=10,
    )
    with running_server(cfg, log=lambda line: None) as srv:
        address = f"tcp://127.0.0.1:{srv.endpoint.rsplit(':', 1)[1]}"
        a_keys = CurveKeys.from_files(tmp_path / "server.key", tmp_path / "client.key_secret")
        ids: list[str] = []
        out: dict = {}
        img = np.full((24, 24, 3), 120, np.uint8)
        mask = np.zeros((24, 24), np.uint8)
        mask[6:18, 6:18] = 255

        def owner() -> None:
            with Client(address, timeout_s=30.0, curve=a_keys) as a:
                out["a"] = a.edit(
                    RawImage(img.tobytes(), 24, 24, 3, "u8"),
                    RawImage(mask.tobytes(), 24, 24, 1, "u8"),
                    op="remove",
                    units=[2],
                    progress=lambda p: ids.append(p["job"]),
                )

        t = threading.Thread(target=owner)
        t.start()
        ctx = zmq.Context()
        b = ctx.socket(zmq.DEALER)
        b.linger = 0
        b.curve_serverkey = a_keys.server_public
        b.curve_publickey, b.curve_secretkey = zmq.auth.load_certificate(b_secret)
        b.connect(address)
        got = []
        try:
            deadline = time.monotonic() + 120
            while not ids and time.monotonic() < deadline:
                time.sleep(0.05)
            while t.is_alive() and time.monotonic() < deadline:
                for kind in ("heartbeat", "status"):
                    msg = {"v": 1, "kind": kind, "id": kind, "job": ids[0]}
                    b.send_multipart([msgpack.packb(msg, use_bin_type=True)])
                    assert b.poll(30_000), "no answer to B"
                    got.append(b.recv_multipart())
                time.sleep(0.2)
            t.join(60)
        finally:
            b.close(0)
            ctx.term()
        assert out["a"]["job"] == ids[0] and out["a"]["image"].width == 24
        heads = [msgpack.unpackb(parts[0], raw=False) for parts in got]
        assert heads and all(len(parts) == 1 for parts in got)  # never pixels
        assert all(h["kind"] == "error" for h in heads if h["id"] == "heartbeat")
        shown = [j for h in heads if h["kind"] == "status" for j in h["jobs"]]
        assert all(j["job"] != ids[0] and not j["mine"] for j in shown)


def test_secret_keys_are_private_and_exposed_ones_refused(tmp_path: Path):
    """--make-keys under a permissive umask writes the secret keys 0600 in a 0700 folder; a
    secret key others can read stops the server (exit 2, one line naming the chmod) and the
    client alike."""
    keys = tmp_path / "keys"
    made = subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$@"', "sh", *SERVE, "--make-keys", str(keys)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert made.returncode == 0, made.stderr
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(keys) == 0o700
    assert mode(keys / "server.key_secret") == mode(keys / "client.key_secret") == 0o600
    CurveKeys.from_files(keys / "server.key", keys / "client.key_secret")  # accepted
    serve = ["--bind", f"tcp://0.0.0.0:{free_port()}", "--allow-remote", "--curve-dir", str(keys)]
    for name in ("server.key_secret", "client.key_secret"):
        (keys / name).chmod(0o644)
    proc = run(serve)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"chmod 600 {keys / 'server.key_secret'}" in lines[0]
    with pytest.raises(ValueError, match="chmod 600"):
        CurveKeys.from_files(keys / "server.key", keys / "client.key_secret")
