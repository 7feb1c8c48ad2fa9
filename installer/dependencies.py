"""Dependencies of the plug-in in GIMP's Python: probe which of gi, zmq and msgpack it imports,
and make zmq and msgpack importable (apt on Debian/Ubuntu, else vendored next to the plug-in:
msgpack's pure-Python code and a pyzmq wheel for that Python's version and platform)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .common import run as _run

APT_PACKAGES = ["python3-zmq", "python3-msgpack"]
PY_MODULES = ["gi", "zmq", "msgpack"]


# -- Python modules as GIMP's Python sees them --------------------------------------------------
PROBE = r"""
import json, sys
sys.path[:0] = [p for p in sys.argv[1:2] if p]
sys.path.extend(p for p in sys.argv[2:3] if p)
out = {"python": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3], "modules": {}}
for name in sys.argv[3].split(","):
    try:
        if name == "gi":
            import gi
            gi.require_version("Gimp", "3.0")
            from gi.repository import Gimp  # noqa
            out["modules"][name] = {"ok": True, "where": gi.__file__}
        else:
            m = __import__(name)
            v = getattr(m, "__version__", None) or ".".join(map(str, getattr(m, "version", ())))
            out["modules"][name] = {"ok": True, "where": getattr(m, "__file__", ""), "version": v}
    except Exception as e:
        out["modules"][name] = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
print(json.dumps(out))
"""


def probe_python(
    python: list[str], plugin_folder: Path | None = None, modules: list[str] = PY_MODULES
) -> dict:
    """Import ``modules`` with GIMP's Python as the plug-in would (plug-in folder first,
    vendor/ last)."""
    if not python:
        return {"error": "no Python found", "modules": {}}
    first = str(plugin_folder) if plugin_folder else ""
    last = str(plugin_folder / "vendor") if plugin_folder else ""
    try:
        r = _run(python + ["-c", PROBE, first, last, ",".join(modules)], timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"could not run {' '.join(python)}: {e}", "modules": {}}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {
            "error": (r.stderr or r.stdout).strip()[-500:] or f"exit {r.returncode}",
            "modules": {},
        }


def python_tags(python: list[str]) -> dict:
    code = (
        "import json, sys, sysconfig, platform; print(json.dumps({'v': '%d%d' % "
        "sys.version_info[:2], 'impl': sys.implementation.name, 'plat': "
        "sysconfig.get_platform(), 'machine': platform.machine()}))"
    )
    r = _run(python + ["-c", code])
    return json.loads(r.stdout.strip())


def is_debian_like() -> bool:
    return Path("/etc/debian_version").exists() and shutil.which("dpkg") is not None


def apt_command() -> list[str]:
    cmd = ["apt-get", "install", "-y"] + APT_PACKAGES
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        cmd = ["sudo"] + cmd
    return cmd


# -- vendoring -----------------------------------------------------------------------------------
def vendor_msgpack(vendor: Path, log) -> bool:
    """Copy msgpack's pure-Python fallback (no compiled extension) into vendor/."""
    import importlib.util

    spec = importlib.util.find_spec("msgpack")
    dest = vendor / "msgpack"
    if spec and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0])
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, dest / f.name)
        log(f"vendored msgpack (pure Python) from {src}")
        return True
    with tempfile.TemporaryDirectory() as tmp:
        r = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "msgpack",
                "-d",
                tmp,
            ],
            timeout=300,
        )
        archives = list(Path(tmp).glob("msgpack-*.tar.gz"))
        if r.returncode != 0 or not archives:
            log("could not get msgpack's sources (no msgpack here and pip download failed)")
            return False
        import tarfile

        with tarfile.open(archives[0]) as tar:
            members = [
                m for m in tar.getmembers() if re.search(r"^[^/]+/msgpack/[^/]+\.py$", m.name)
            ]
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for m in members:
                f = tar.extractfile(m)
                if f:
                    (dest / Path(m.name).name).write_bytes(f.read())
        log(f"vendored msgpack (pure Python) from {archives[0].name}")
        return True


def _platform_tags(tags: dict) -> list[str]:
    plat = tags["plat"].replace("-", "_").replace(".", "_")
    machine = tags["machine"].lower()
    if plat.startswith("linux"):
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        return [f"manylinux_2_{n}_{arch}" for n in (28, 27, 26, 17)] + [
            f"manylinux2014_{arch}",
            f"musllinux_1_2_{arch}",
        ]
    if plat.startswith("macosx"):
        arch = "arm64" if machine == "arm64" else "x86_64"
        return [f"macosx_{v}_{arch}" for v in ("10_15", "11_0", "10_9")] + [
            f"macosx_{v}_universal2" for v in ("10_15", "11_0", "10_9")
        ]
    if plat.startswith("mingw"):
        return []  # MSYS2/MinGW Python: PyPI has no pyzmq wheels for it
    if plat.startswith("win"):
        return [plat]
    return []


def vendor_pyzmq(python: list[str], vendor: Path, log) -> bool:
    """Put a pyzmq matching GIMP's Python into vendor/: with that Python's pip when it has
    one, else a wheel fetched by this Python's pip for GIMP's Python's tags."""
    r = _run(python + ["-m", "pip", "--version"])
    if r.returncode == 0:
        r = _run(
            python
            + [
                "-m",
                "pip",
                "install",
                "--upgrade",
                "--only-binary=:all:",
                "--target",
                str(vendor),
                "pyzmq",
            ],
            timeout=600,
        )
        if r.returncode == 0:
            log("vendored pyzmq with GIMP's own pip")
            return True
        log("GIMP's pip could not install pyzmq: " + r.stderr.strip()[-300:])
    try:
        tags = python_tags(python)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        log(f"cannot ask GIMP's Python for its wheel tags: {e}")
        return False
    plats = _platform_tags(tags)
    if tags["impl"] != "cpython" or not plats:
        log(
            f"no PyPI wheel of pyzmq fits GIMP's Python ({tags['impl']} {tags['v']}, "
            f"{tags['plat']}); install pyzmq with that Python's own package manager"
        )
        return False
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            tags["v"],
            "--implementation",
            "cp",
            "-d",
            tmp,
        ]
        for p in plats:
            cmd += ["--platform", p]
        r = _run(cmd + ["pyzmq"], timeout=600)
        wheels = list(Path(tmp).glob("pyzmq-*.whl"))
        if r.returncode != 0 or not wheels:
            log(
                "pip could not download a pyzmq wheel for GIMP's Python: "
                + (r.stderr.strip()[-300:] or "no wheel")
            )
            return False
        for old in list(vendor.glob("zmq")) + list(vendor.glob("pyzmq*")):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        with zipfile.ZipFile(wheels[0]) as z:
            z.extractall(vendor)
        log(f"vendored {wheels[0].name}")
    return True


def ensure_modules(python: list[str], folder: Path, *, apt: bool, vendor: bool | None, log) -> str:
    """Make zmq and msgpack importable by GIMP's Python; returns "ok", "apt", "vendored",
    "missing"."""
    if not python:
        log("no Python for GIMP found: cannot check zmq/msgpack")
        return "missing"
    if vendor is not True:
        info = probe_python(python, folder, ["zmq", "msgpack"])
        missing = [m for m, r in info.get("modules", {}).items() if not r["ok"]]
        if not missing and "error" not in info:
            log(f"GIMP's Python ({' '.join(python)}) imports zmq and msgpack")
            return "ok"
        system_python = python[0].startswith("/usr/bin/")
        if is_debian_like() and system_python and vendor is None:
            cmd = apt_command()
            if apt:
                log("running: " + shlex.join(cmd))
                r = subprocess.run(cmd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
                if r.returncode == 0:
                    return "apt"
                log(f"apt-get failed (exit {r.returncode})")
                return "missing"
            log(
                f"GIMP's Python lacks {', '.join(missing) or 'zmq/msgpack'}; install them with:"
                f"\n    {shlex.join(cmd)}\n(or re-run the installer with --apt)"
            )
            return "missing"
        if vendor is False:
            log(f"GIMP's Python lacks {', '.join(missing)} (vendoring disabled)")
            return "missing"
    vendor_dir = folder / "vendor"
    vendor_dir.mkdir(exist_ok=True)
    ok = vendor_msgpack(vendor_dir, log) and vendor_pyzmq(python, vendor_dir, log)
    info = probe_python(python, folder, ["zmq", "msgpack"])
    if all(r["ok"] for r in info.get("modules", {}).values()) and info.get("modules"):
        return "vendored"
    log(
        "GIMP's Python still cannot import zmq/msgpack"
        + ("" if ok else " (vendoring failed)")
        + ": "
        + json.dumps(info.get("modules") or info.get("error"))
    )
    return "missing"
