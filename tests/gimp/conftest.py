"""Fixtures for the GIMP tests: the trixie chroot with GIMP 3 (built once, cached outside the
repo), the real `ganpaint serve` on a free loopback port, and the plug-in installed into the
chroot with the installer. Helpers live in gimp_env.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `installer`

from gimp_env import (  # noqa: E402
    CHROOT_PLUGIN_DIR,
    Gimp,
    RootBuildFailed,
    RootUnavailable,
    ensure_root,
    free_port,
    gimp_root_path,
    install_plugin,
    mounted_proc,
    start_server,
    stop_server,
)


@pytest.fixture(scope="session")
def gimp_root() -> Path:
    root = gimp_root_path()
    try:
        ensure_root(root)
    except RootUnavailable as e:
        pytest.skip(str(e))
    except RootBuildFailed as e:
        pytest.fail(str(e))
    with mounted_proc(root):
        yield root


@pytest.fixture(scope="session")
def gimp(gimp_root) -> Gimp:
    return Gimp(gimp_root)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real `ganpaint serve` with the default model, on a free loopback port, with short
    fits (the tests check the plumbing, not the quality; the inversion dominates a job's time
    on CPU: 400 steps by default), and its own empty concept library (the user's stays
    untouched)."""
    try:
        import ganpaint.server.client.ganpaint_client  # noqa: F401
    except ImportError as e:
        pytest.fail(f"server/client/ganpaint_client.py is not importable: {e}")
    address = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("server") / "serve.log"
    invert_steps = os.environ.get("GANPAINT_TEST_INVERT_STEPS", "40")
    data = tmp_path_factory.mktemp("data")
    try:
        proc = start_server(
            address,
            log,
            ["--steps", "50", "--invert-steps", invert_steps],
            env={"GANPAINT_DATA": str(data)},
        )
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield {"address": address, "log": log, "pid": proc.pid, "data": data}
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def installed(gimp, server):
    """The plug-in installed with the installer, run inside the chroot with GIMP's Python."""
    output = install_plugin(gimp, server["address"])
    cfg = json.loads(gimp.path(f"{CHROOT_PLUGIN_DIR}/ganpaint/ganpaint.json").read_text())
    assert cfg["address"] == server["address"]
    return {**server, "install_output": output}
