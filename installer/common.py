"""Names and paths every part of the installer shares, and its one error type."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "ganpaint"
PLUGIN_SRC = REPO / "plugin" / PLUGIN_NAME
CLIENT_SRC = REPO / "server" / "client" / "ganpaint_client.py"
CLIENT_NAME = "ganpaint_client.py"
CONFIG_NAME = "ganpaint.json"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5570"
DEFAULT_MODEL = "digiface-dcgan64"
FLATPAK_ID = "org.gimp.GIMP"
SNAP_NAME = "gimp"
# GIMP 3 stable series whose user folders we know; others (3.4, …) are found on disk or asked.
KNOWN_SERIES = ("3.0", "3.2")
# `ganpaint serve` answers hello after 2.6-6.7 s on this project's 2-core test machine under
# load (cold start: imports torch); 60 s leaves room for a slow disk without making a user
# wait minutes for a command that will never answer.
START_WAIT_S = 60.0
OLD_START_WAIT_S = 180.0  # the default of earlier versions: replaced on reinstall
TIMEOUT_S = 10.0


class InstallError(Exception):
    """Something the user must fix; printed as one message."""


def run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
