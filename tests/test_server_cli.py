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

from ganpaint.server.client import Cancelled, Client, CurveKeys, RawImage, ServerUnavailable
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
            assert c.hello()["protocol"] == 1
        with Client(address, timeout_s=0.5, retries=1) as c:  # no keys: no answer
            with pytest.raises(ServerUnavailable):
                c.hello()
        stranger = CurveKeys(keys.server_public, *__import__("zmq").curve_keypair())
        with Client(address, timeout_s=0.5, retries=1, curve=stranger) as c:  # not authorised
            with pytest.raises(ServerUnavailable):
                c.hello()
