"""Helpers for running the plug-in in a real GIMP 3 (Debian trixie chroot, see
/work/shared/gimp3-headless.md) against the real `ganpaint serve`.

The chroot is built once (~1.5 min, ~1.3 GB) and cached outside the repo, in
$GANPAINT_GIMP_ROOT or the series' default folder. GANPAINT_GIMP_SERIES picks the GIMP:
"3.0" (default: Debian trixie, GIMP 3.0.4, /var/cache/ganpaint-gimp-root) or "3.2" (Debian
forky, GIMP 3.2.6, /var/cache/ganpaint-gimp32-root). Tests that need it are marked ``gimp``
and skip (with the reason) when not root or when debootstrap cannot be installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# series -> (Debian suite that ships it, default root folder)
SERIES = {
    "3.0": ("trixie", "/var/cache/ganpaint-gimp-root"),
    "3.2": ("forky", "/var/cache/ganpaint-gimp32-root"),
}
GIMP_SERIES = os.environ.get("GANPAINT_GIMP_SERIES", "3.0")
if GIMP_SERIES not in SERIES:
    raise RuntimeError(f"GANPAINT_GIMP_SERIES={GIMP_SERIES!r}: expected one of {sorted(SERIES)}")
SUITE, DEFAULT_ROOT = SERIES[GIMP_SERIES]
GIMP_CONSOLE = f"gimp-console-{GIMP_SERIES}"
MARKER = ".ganpaint-gimp-root-ok"
CHROOT_HOME = "/root"
CHROOT_GIMP_DIR = f"{CHROOT_HOME}/.config/GIMP/{GIMP_SERIES}"
CHROOT_PLUGIN_DIR = f"{CHROOT_GIMP_DIR}/plug-ins"
CHROOT_SRC = "/opt/ganpaint-src"
NOISE = (
    "Failed to parse tag cache",
    "cannot open display",
    "gimp_wire_read(): unexpected EOF",
    "catalog directory does not exist",
    "Override method set_i18n",
    "Localization disabled",
    # GIMP's own plug-ins (python-eval, file-png) log this too: the core closes their pipe
    # before their last message. Ours must not: kept in the output (see ``is_noise``).
    "gimp_flush(): error: Broken pipe",
    "stray image seems to have been left",
)


def is_noise(line: str) -> bool:
    if not line.strip():
        return True
    return "ganpaint" not in line and any(n in line for n in NOISE)


def gimp_root_path() -> Path:
    return Path(os.environ.get("GANPAINT_GIMP_ROOT", DEFAULT_ROOT))


def _have_debootstrap() -> bool:
    if shutil.which("debootstrap"):
        return True
    if not shutil.which("apt-get"):
        return False
    r = subprocess.run(
        ["apt-get", "install", "-y", "debootstrap"],
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return r.returncode == 0 and shutil.which("debootstrap") is not None


class RootUnavailable(Exception):
    """The chroot cannot be had here (not root, no debootstrap): a reason to skip."""


class RootBuildFailed(Exception):
    """Building the chroot was tried and failed."""


def ensure_root(root: Path, extra_packages: tuple[str, ...] = ()) -> None:
    """Build the trixie root with GIMP 3 (and ``extra_packages``) if it is not there yet,
    under a lock so that parallel sessions build it once."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise RootUnavailable("GIMP tests need root (debootstrap and chroot)")
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / (root.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [
            p
            for p in extra_packages
            if not (root / "var/lib/dpkg/info" / f"{p}.list").exists()
            and not list((root / "var/lib/dpkg/info").glob(f"{p}:*.list"))
        ]
        if (root / MARKER).exists() and not missing:
            return
        if not _have_debootstrap():
            raise RootUnavailable("debootstrap is not installed and apt-get could not install it")
        log = root.parent / (root.name + ".build.log")
        t0 = time.monotonic()
        with open(log, "wb") as out:
            r = subprocess.run(
                ["sh", str(HERE / "build_root.sh"), str(root), *extra_packages],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SUITE": SUITE},
            )
        if r.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RootBuildFailed(
                f"building the GIMP root in {root} failed (exit "
                f"{r.returncode}, {time.monotonic() - t0:.0f} s); log {log}:"
                f"\n{tail}"
            )


@contextlib.contextmanager
def mounted_proc(root: Path):
    proc = root / "proc"
    was = subprocess.run(["mountpoint", "-q", str(proc)]).returncode == 0
    if not was:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        yield
    finally:
        if not was:
            subprocess.run(["umount", str(proc)], check=False)


@dataclass
class GimpRun:
    returncode: int
    output: str  # stdout + stderr, noise lines dropped
    seconds: float


@dataclass
class Gimp:
    root: Path

    def path(self, inside: str) -> Path:
        """A path inside the chroot, seen from the host."""
        return self.root / inside.lstrip("/")

    def run(
        self,
        argv: list[str],
        timeout: float = 300,
        stdin: str | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        cmd = ["chroot", str(self.root), "env", f"HOME={CHROOT_HOME}", "LANG=C.UTF-8"]
        cmd += [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(
            cmd + argv,
            input=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )

    def batch(self, script: str, timeout: float = 600, env: dict | None = None) -> GimpRun:
        """Run a python-fu-eval batch script in gimp-console-3.x (``env``: added to GIMP's
        environment, which its plug-ins inherit)."""
        t0 = time.monotonic()
        r = self.run(
            [GIMP_CONSOLE, "-i", "--batch-interpreter=python-fu-eval", "-b", "-", "--quit"],
            timeout=timeout,
            stdin=script,
            env=env,
        )
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if not is_noise(ln)]
        return GimpRun(r.returncode, "\n".join(lines), time.monotonic() - t0)


def run_batch_script(
    gimp: Gimp, params: dict, timeout: float = 600, env: dict | None = None
) -> tuple[dict | None, GimpRun]:
    """Run batch_script.py in GIMP with ``params`` (its "out" folder, inside the chroot, is
    emptied first): (its result.json, or None when GIMP wrote none; the run)."""
    out = gimp.path(params["out"])
    if out.exists():
        shutil.rmtree(out)
    script = f"PARAMS = {json.dumps(params)!r}\nimport json\nPARAMS = json.loads(PARAMS)\n"
    run = gimp.batch(script + (HERE / "batch_script.py").read_text(), timeout=timeout, env=env)
    result = out / "result.json"
    return (json.loads(result.read_text()) if result.exists() else None), run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ganpaint_command() -> list[str]:
    exe = Path(sys.executable).parent / "ganpaint"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ganpaint.server.cli"]


def copy_sources(root: Path) -> Path:
    """installer/, plugin/ and the client module into the chroot (what a user would have)."""
    dest = root / CHROOT_SRC.lstrip("/")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "installer", dest / "installer", ignore=ignore)
    shutil.copytree(REPO / "plugin", dest / "plugin", ignore=ignore)
    client = Path("server", "client", "ganpaint_client.py")
    (dest / client.parent).mkdir(parents=True)
    shutil.copy2(REPO / client, dest / client)
    return dest


def start_server(
    address: str,
    log: Path,
    extra_args: list[str] = (),
    env: dict | None = None,
    wait_s: float = 300,
) -> subprocess.Popen:
    """The real `ganpaint serve` on ``address`` (from this Python's environment); returns once
    it answers hello. RuntimeError with the log's tail if it does not."""
    from ganpaint.server.client import ganpaint_client as gc

    out = open(log, "wb")  # noqa: SIM115 - the child keeps it
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    proc = subprocess.Popen(
        ganpaint_command() + ["serve", "--bind", address, "--device", "cpu", *extra_args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out.close()
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"ganpaint serve exited ({proc.returncode}):\n"
                + log.read_text(errors="replace")[-3000:]
            )
        c = gc.Client(address, timeout_s=2.0, retries=1)
        try:
            c.hello()
            return proc
        except gc.ServerError:
            if time.monotonic() - t0 > wait_s:
                stop_server(proc)
                raise RuntimeError(
                    f"ganpaint serve did not answer hello within {wait_s:.0f} "
                    "s:\n" + log.read_text(errors="replace")[-3000:]
                ) from None
            time.sleep(0.5)
        finally:
            c.close()


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def install_plugin(gimp: Gimp, address: str) -> str:
    """Copy the sources into the chroot and run the installer there with GIMP's Python, as a
    user would: without --plugin-dir (it finds the GIMP and asks it for its folder)."""
    copy_sources(gimp.root)
    r = gimp.run(
        [
            "sh",
            "-c",
            f"cd {CHROOT_SRC} && python3 -m installer --address {address} --no-start-command",
        ]
    )
    if r.returncode != 0:
        raise RuntimeError("installer failed:\n" + r.stdout + r.stderr)
    return r.stdout


@contextlib.contextmanager
def served_plugin(gimp: Gimp, log_tail: int = 2000):
    """For the block: the real `ganpaint serve` (with a scratch data folder) and the plug-in
    installed in the chroot against it; yields the scratch folder. The server's log tail is
    printed at the end."""
    address = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp, mounted_proc(gimp.root):
        log = Path(tmp) / "serve.log"
        server = start_server(address, log, env={"GANPAINT_DATA": str(Path(tmp) / "data")})
        try:
            install_plugin(gimp, address)
            yield Path(tmp)
        finally:
            stop_server(server)
            print(log.read_text(errors="replace")[-log_tail:])


def make_photo(size: int = 256, seed: int = 3):
    """A photo-like test image made in code: a portrait drawn by the default model at a fixed
    seed, enlarged to ``size`` px; [size, size, 3] uint8."""
    import torch

    from ganpaint.core.generators import load_model
    from ganpaint.core.photo import resize

    gen = load_model("digiface-dcgan64", "cpu")
    with torch.no_grad():
        img = gen(gen.sample_latent(1, torch.Generator().manual_seed(seed)))
    img = resize(img.cpu(), size)[0].permute(1, 2, 0)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
