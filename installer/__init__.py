"""Install the GANPaint plug-in into GIMP 3, check the chain GIMP → plug-in → Python modules →
server → model, and uninstall it. Standard library only: it runs under any Python 3.8+,
including GIMP's own.

    python -m installer                 # install for the current user
    python -m installer --check         # diagnose every link, say how to fix the broken one
    python -m installer --uninstall

See ``python -m installer --help`` for the options.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "Check",
    "GimpInstall",
    "check",
    "find_gimp",
    "install",
    "main",
    "uninstall",
    "user_plugin_dir",
]

REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "ganpaint"
PLUGIN_SRC = REPO / "plugin" / PLUGIN_NAME
CLIENT_SRC = REPO / "server" / "client.py"
CLIENT_NAME = "ganpaint_client.py"
CONFIG_NAME = "ganpaint.json"
GIMP_SERIES = "3.0"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5570"
DEFAULT_MODEL = "digiface-dcgan64"
FLATPAK_ID = "org.gimp.GIMP"
APT_PACKAGES = ["python3-zmq", "python3-msgpack"]
PY_MODULES = ["gi", "zmq", "msgpack"]


class InstallError(Exception):
    """Something the user must fix; printed as one message."""


# -- where things are --------------------------------------------------------------------------
def user_plugin_dir(
    system: str | None = None,
    environ: dict | None = None,
    home: Path | None = None,
    flatpak: bool = False,
) -> Path:
    """GIMP 3.0's per-user plug-in folder on this platform."""
    system = system or platform.system()
    env = os.environ if environ is None else environ
    home = home or Path.home()
    if system == "Windows":
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "GIMP" / GIMP_SERIES / "plug-ins"
    if system == "Darwin":
        return home / "Library" / "Application Support" / "GIMP" / GIMP_SERIES / "plug-ins"
    if flatpak:
        return home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP" / GIMP_SERIES / "plug-ins"
    config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / "GIMP" / GIMP_SERIES / "plug-ins"


@dataclass
class GimpInstall:
    kind: str  # "system" | "flatpak" | "app" (macOS bundle / Windows folder) | "given"
    executable: str | None
    version: str | None = None
    python: list[str] = field(default_factory=list)  # the command that runs its plug-ins
    python_source: str = ""  # how we know

    def describe(self) -> str:
        v = f" {self.version}" if self.version else ""
        return f"GIMP{v} ({self.kind}: {self.executable})"


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def gimp_version(executable: str) -> str | None:
    try:
        out = _run([executable, "--version"], timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else None


def _interp_python(prefix: Path) -> tuple[list[str], str] | None:
    """The Python named in GIMP's interpreters/*.interp files under ``prefix``."""
    for lib in ("lib", "lib64", "lib/*", "Contents/Resources/lib"):
        for d in sorted(prefix.glob(f"{lib}/gimp/{GIMP_SERIES}/interpreters")):
            for f in sorted(d.glob("*.interp")):
                try:
                    lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
                for line in lines:
                    line = line.strip()
                    if line.startswith("#") or "=" not in line or line.startswith(":"):
                        continue
                    name, _, path = line.partition("=")
                    if Path(name.strip()).name in ("python", "python3", "pythonw"):
                        p = Path(path.strip())
                        if not p.is_absolute():
                            p = prefix / p
                        return [str(p)], f"{f}"
    return None


def _python_for(prefix: Path | None) -> tuple[list[str], str]:
    if prefix is not None:
        found = _interp_python(prefix)
        if found:
            return found
        for name in ("python3", "python3.exe", "python.exe"):
            for sub in ("bin", "Contents/MacOS", "Contents/Resources/bin"):
                p = prefix / sub / name
                if p.is_file():
                    return [str(p)], f"bundled with GIMP ({p})"
    py = shutil.which("python3")
    if py:
        return [py], "python3 on PATH (the plug-in's '#!/usr/bin/env python3')"
    return [], "no python3 found"


def find_gimp(gimp: str | None = None, environ: dict | None = None) -> list[GimpInstall]:
    """Every GIMP 3 install we can see, the most likely first."""
    env = os.environ if environ is None else environ
    found: list[GimpInstall] = []
    if gimp:
        exe = shutil.which(gimp) or gimp
        prefix = Path(exe).resolve().parent.parent if Path(exe).exists() else None
        py, src = _python_for(prefix)
        return [GimpInstall("given", exe, gimp_version(exe), py, src)]
    system = platform.system()
    names = ["gimp-console-3.0", "gimp-3.0", "gimp-console", "gimp"]
    if system == "Windows":
        names = [n + ".exe" for n in names] + names
    seen = set()
    for name in names:
        exe = shutil.which(name)
        if not exe or Path(exe).resolve() in seen:
            continue
        seen.add(Path(exe).resolve())
        version = gimp_version(exe)
        if version and version.startswith("3."):
            py, src = _python_for(Path(exe).resolve().parent.parent)
            found.append(GimpInstall("system", exe, version, py, src))
            break
    if system == "Darwin":
        for app in sorted(Path("/Applications").glob("GIMP*.app")):
            exe = app / "Contents" / "MacOS" / "gimp"
            if exe.exists():
                py, src = _python_for(app)
                found.append(GimpInstall("app", str(exe), None, py, src))
    if system == "Windows":
        roots = [env.get("ProgramFiles", r"C:\Program Files"), env.get("LOCALAPPDATA", "")]
        for root in filter(None, roots):
            for d in sorted(Path(root).glob("GIMP 3*")) + sorted(
                Path(root, "Programs").glob("GIMP 3*")
            ):
                exe = d / "bin" / "gimp-3.0.exe"
                if exe.exists():
                    py, src = _python_for(d)
                    found.append(GimpInstall("app", str(exe), None, py, src))
    flatpak = shutil.which("flatpak")
    if flatpak and system == "Linux":
        try:
            info = _run([flatpak, "info", FLATPAK_ID], timeout=30)
        except (OSError, subprocess.SubprocessError):
            info = None
        if info is not None and info.returncode == 0:
            m = re.search(r"Version:\s*(\S+)", info.stdout)
            version = m.group(1) if m else None
            if version is None or version.startswith("3."):
                found.append(
                    GimpInstall(
                        "flatpak",
                        f"flatpak run {FLATPAK_ID}",
                        version,
                        [flatpak, "run", "--command=python3", FLATPAK_ID],
                        "the Flatpak's python3",
                    )
                )
    return found


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


# -- install / uninstall -----------------------------------------------------------------------
def default_start_command(address: str) -> list[str] | None:
    """`ganpaint serve --bind ADDRESS` from the environment running the installer, when it
    has one."""
    scripts = Path(sys.executable).parent
    exe = next(
        (str(scripts / n) for n in ("ganpaint", "ganpaint.exe") if (scripts / n).is_file()), None
    ) or shutil.which("ganpaint")
    return [exe, "serve", "--bind", address] if exe else None


def read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def plugin_files(client_src: Path) -> dict[str, Path]:
    """Installed name -> source file."""
    if not PLUGIN_SRC.is_dir():
        raise InstallError(
            f"plug-in sources not found at {PLUGIN_SRC}: run the installer "
            "from the GANPaint source tree"
        )
    files = {f.name: f for f in sorted(PLUGIN_SRC.glob("*.py"))}
    if not client_src.is_file():
        raise InstallError(
            f"{client_src} is missing: the plug-in needs the server's client "
            "module (server/client.py)"
        )
    files[CLIENT_NAME] = client_src
    return files


def install(
    plugin_dir: Path,
    *,
    address: str | None = None,
    start_command: list[str] | None | bool = True,
    python: list[str] | None = None,
    apt: bool = False,
    vendor: bool | None = None,
    deps: bool = True,
    client_src: Path = CLIENT_SRC,
    log=print,
) -> dict:
    """Install (or update) the plug-in folder; returns what was done.

    ``start_command``: True = keep the configured one or detect `ganpaint serve`; False/None =
    none; a list = that command. ``vendor``: None = only when GIMP's Python lacks the modules
    and apt is not the way; True = always; False = never.
    """
    folder = plugin_dir / PLUGIN_NAME
    old = read_config(folder)
    files = plugin_files(client_src)
    folder.mkdir(parents=True, exist_ok=True)
    keep = {CONFIG_NAME, "vendor"}
    for entry in folder.iterdir():  # leftovers of older versions
        if entry.name not in files and entry.name not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name, src in files.items():
        dest = folder / name
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755 if name == f"{PLUGIN_NAME}.py" else 0o644)
    log(f"installed the plug-in in {folder}")

    address = address or old.get("address") or DEFAULT_ADDRESS
    if start_command is True:
        start = (
            old.get("start_command") if "start_command" in old else default_start_command(address)
        )
    else:
        start = start_command or None
    if start:
        hint = shlex.join(start)
    elif old.get("serve_hint"):
        hint = old["serve_hint"]
    else:
        hint = "ganpaint serve" + ("" if address == DEFAULT_ADDRESS else f" --bind {address}")
    config = {
        "address": address,
        "start_command": start,
        "timeout_s": old.get("timeout_s", 10.0),
        "start_wait_s": old.get("start_wait_s", 180.0),
        "serve_hint": hint,
        "installed_from": str(REPO),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log(
        f"wrote {folder / CONFIG_NAME} (server {config['address']}, start command: "
        f"{shlex.join(start) if start else 'none'})"
    )

    done = {"folder": str(folder), "config": config, "python": python or [], "deps": "skipped"}
    if not deps:
        return done
    if python is None:
        gimps = find_gimp()
        python = gimps[0].python if gimps else _python_for(None)[0]
        done["python"] = python
    done["deps"] = ensure_modules(python, folder, apt=apt, vendor=vendor, log=log)
    return done


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


def uninstall(plugin_dir: Path, log=print) -> bool:
    folder = plugin_dir / PLUGIN_NAME
    if not folder.exists():
        log(f"nothing to remove: {folder} does not exist")
        return False
    if not (folder / f"{PLUGIN_NAME}.py").exists() and not (folder / CONFIG_NAME).exists():
        raise InstallError(f"{folder} does not look like the GANPaint plug-in; not removing it")
    shutil.rmtree(folder)
    log(f"removed {folder}")
    return True


# -- check -----------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


HELLO = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[1] + "/vendor")
import ganpaint_client as gc
c = gc.Client(sys.argv[2], timeout_s=float(sys.argv[3]), retries=1)
try:
    info = c.hello()
    try:
        info["models_detail"] = c.models()
    except gc.ServerError as e:
        info["models_error"] = str(e)
    print(json.dumps({"ok": True, "hello": info}, default=str))
except gc.ServerError as e:
    print(json.dumps({"ok": False, "code": e.code, "message": e.message}))
finally:
    c.close()
"""


def check(
    plugin_dir: Path,
    *,
    gimp: str | None = None,
    python: list[str] | None = None,
    address: str | None = None,
    model: str | None = None,
    timeout_s: float = 5.0,
) -> list[Check]:
    """Diagnose each link of the chain; stops describing links past the first broken one
    only where they cannot be tested."""
    results: list[Check] = []
    gimps = find_gimp(gimp)
    if gimps:
        g = gimps[0]
        results.append(Check("GIMP 3", True, g.describe()))
        python = python or g.python
    else:
        results.append(
            Check(
                "GIMP 3",
                False,
                "no GIMP 3 found (looked on PATH, Flatpak, the usual application folders)",
                "install GIMP 3 (Debian 13/Ubuntu 25.04+: apt install gimp; or "
                "flatpak install flathub org.gimp.GIMP), or pass --gimp PATH",
            )
        )
        python = python or _python_for(None)[0]

    folder = plugin_dir / PLUGIN_NAME
    main_file = folder / f"{PLUGIN_NAME}.py"
    problems = []
    if not main_file.is_file():
        problems.append(f"{main_file} missing")
    elif os.name != "nt" and not os.access(main_file, os.X_OK):
        problems.append(f"{main_file} is not executable")
    if not (folder / CLIENT_NAME).is_file():
        problems.append(f"{CLIENT_NAME} missing")
    stale = []
    if not problems and PLUGIN_SRC.is_dir():
        try:
            for name, src in plugin_files(CLIENT_SRC).items():
                dest = folder / name
                if not dest.is_file() or dest.read_bytes() != src.read_bytes():
                    stale.append(name)
        except InstallError:
            pass
    config = read_config(folder)
    if problems:
        results.append(
            Check(
                "plug-in installed",
                False,
                "; ".join(problems),
                f"python -m installer --plugin-dir {shlex.quote(str(plugin_dir))}",
            )
        )
    else:
        detail = f"{folder}" + (f" (differs from the sources: {', '.join(stale)})" if stale else "")
        results.append(
            Check(
                "plug-in installed",
                True,
                detail,
                "re-run the installer to update it" if stale else "",
            )
        )

    info = probe_python(python, folder if folder.is_dir() else None)
    mods = info.get("modules", {})
    bad = {m: r.get("error", "") for m, r in mods.items() if not r.get("ok")}
    if "error" in info or bad or not mods:
        if "error" in info:
            detail = info["error"]
        else:
            detail = "; ".join(f"{m}: {e}" for m, e in bad.items())
        fix = (
            "python -m installer --apt  (or: " + shlex.join(apt_command()) + ")"
            if is_debian_like() and python and python[0].startswith("/usr/bin/")
            else "python -m installer --vendor (copies msgpack and a pyzmq wheel next to "
            "the plug-in)"
        )
        if "gi" in bad:
            fix = (
                "GIMP's Python cannot load GIMP's introspection data (gi/Gimp 3.0): "
                "install python3-gi and gir1.2-gimp-3.0, or point --python at GIMP's Python"
            )
        results.append(
            Check(
                "Python modules for GIMP",
                False,
                f"{' '.join(python) or 'no Python'}: {detail}",
                fix,
            )
        )
        deps_ok = False
    else:
        where = ", ".join(f"{m} {r.get('version') or ''}".strip() for m, r in mods.items())
        results.append(
            Check(
                "Python modules for GIMP",
                True,
                f"{' '.join(python)} (Python {info.get('version')}): {where}",
            )
        )
        deps_ok = True

    address = address or config.get("address") or DEFAULT_ADDRESS
    hint = config.get("serve_hint") or "ganpaint serve"
    start = config.get("start_command")
    reply = None
    runner = python if deps_ok else None
    if runner is None:
        local = probe_python([sys.executable], None, ["zmq", "msgpack"])
        if all(r.get("ok") for r in local.get("modules", {}).values()):
            runner = [sys.executable]
    tmp = None
    client_dir = folder if (folder / CLIENT_NAME).is_file() else None
    if client_dir is None and CLIENT_SRC.is_file():  # not installed: ask with the sources'
        tmp = tempfile.TemporaryDirectory()
        client_dir = Path(tmp.name)
        shutil.copyfile(CLIENT_SRC, client_dir / CLIENT_NAME)
    if runner is None or client_dir is None:
        results.append(
            Check(
                "server reachable",
                False,
                f"not tested ({address}): no Python "
                "with zmq+msgpack and the client module to ask with",
                "fix the links above first",
            )
        )
    else:
        try:
            r = _run(
                runner + ["-c", HELLO, str(client_dir), address, str(timeout_s)],
                timeout=timeout_s * 4 + 30,
            )
            reply = json.loads(r.stdout.strip().splitlines()[-1])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
            reply = {"ok": False, "code": "internal", "message": str(e)}
        finally:
            if tmp is not None:
                tmp.cleanup()
        if reply.get("ok"):
            h = reply["hello"]
            results.append(
                Check(
                    "server reachable",
                    True,
                    f"{address}: ganpaint {h.get('server_version', '?')}, protocol "
                    f"{h.get('protocol', '?')}, device {h.get('device', '?')}",
                )
            )
        else:
            fix = f"start it: {hint}" + (
                f"  (the plug-in starts it itself with {shlex.join(start)})" if start else ""
            )
            if reply.get("code") not in ("unavailable", "timeout"):
                fix = "look at the server's terminal output"
            results.append(
                Check(
                    "server reachable",
                    False,
                    f"{address}: {reply.get('code')}: {reply.get('message')}",
                    fix,
                )
            )

    if reply and reply.get("ok"):
        h = reply["hello"]
        want = model or DEFAULT_MODEL
        models = h.get("models_detail") or h.get("models") or []
        ids = [m.get("id") if isinstance(m, dict) else m for m in models]
        entry = next(
            (m for m in models if (m.get("id") if isinstance(m, dict) else m) == want), None
        )
        unusable = isinstance(entry, dict) and (
            entry.get("available") is False or entry.get("present") is False
        )
        default = h.get("default_model")
        if entry is None or unusable:
            results.append(
                Check(
                    "model",
                    False,
                    f"{want} not available on the server (it has: "
                    f"{', '.join(map(str, ids)) or 'none'})",
                    f"restart the server with the model: {hint} --model {want}; "
                    "`ganpaint models` lists the models and where they come "
                    "from",
                )
            )
        else:
            state = (
                "loaded"
                if isinstance(entry, dict) and entry.get("loaded")
                else ("known, loaded on first use")
            )
            note = f"; the server's default is {default}" if default and default != want else ""
            results.append(Check("model", True, f"{want} ({state}{note})"))
    else:
        results.append(
            Check("model", False, "not tested: no server answered", "fix the server link first")
        )
    return results


def print_checks(results: list[Check], out=print) -> bool:
    broken = None
    for c in results:
        out(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if not c.ok and broken is None:
            broken = c
    if broken:
        out(f"\nFirst broken link: {broken.name}. Fix: {broken.fix}")
        return False
    out(
        "\nAll links work: open an image in GIMP, select an area, and use "
        "Filters › Generative › GANPaint."
    )
    return True


# -- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m installer", description="Install the GANPaint plug-in into GIMP 3."
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="diagnose every link of the chain")
    mode.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    p.add_argument(
        "--plugin-dir",
        type=Path,
        help="GIMP 3 plug-in folder (default: the user's, for this platform)",
    )
    p.add_argument(
        "--flatpak",
        action="store_true",
        help="target the Flatpak GIMP (its own plug-in folder and Python)",
    )
    p.add_argument("--gimp", help="GIMP executable to use for the checks")
    p.add_argument("--python", help="the Python GIMP runs plug-ins with (default: found)")
    p.add_argument("--address", help=f"server address (default {DEFAULT_ADDRESS})")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--start-command",
        help="command the plug-in runs to start the server when none answers, "
        "e.g. '/path/to/venv/bin/ganpaint serve' (default: `ganpaint "
        "serve` of the Python running this installer, if it has one)",
    )
    start.add_argument(
        "--no-start-command",
        action="store_true",
        help="never start the server from GIMP; only say how to",
    )
    deps = p.add_mutually_exclusive_group()
    deps.add_argument(
        "--apt",
        action="store_true",
        help="Debian/Ubuntu: apt-get install python3-zmq python3-msgpack",
    )
    deps.add_argument(
        "--vendor",
        action="store_true",
        help="copy msgpack and a pyzmq wheel for GIMP's Python next to the plug-in",
    )
    deps.add_argument("--no-deps", action="store_true", help="do not touch Python modules")
    p.add_argument("--client", type=Path, default=CLIENT_SRC, help=argparse.SUPPRESS)
    p.add_argument("--model", help=f"model --check expects (default {DEFAULT_MODEL})")
    p.add_argument("--json", action="store_true", help="--check: print JSON")
    args = p.parse_args(argv)

    plugin_dir = args.plugin_dir or user_plugin_dir(flatpak=args.flatpak)
    python = shlex.split(args.python) if args.python else None
    if args.flatpak and python is None:
        python = ["flatpak", "run", "--command=python3", FLATPAK_ID]
    try:
        if args.uninstall:
            uninstall(plugin_dir)
            return 0
        if args.check:
            results = check(
                plugin_dir, gimp=args.gimp, python=python, address=args.address, model=args.model
            )
            if args.json:
                print(json.dumps([asdict(c) for c in results], indent=2))
                return 0 if all(c.ok for c in results) else 1
            return 0 if print_checks(results) else 1
        if args.no_start_command or (args.flatpak and not args.start_command):
            # The Flatpak's sandbox cannot run commands of the host: say how, never start.
            start_cmd: list[str] | None | bool = None
        elif args.start_command:
            start_cmd = shlex.split(args.start_command)
        else:
            start_cmd = True
        done = install(
            plugin_dir,
            address=args.address,
            start_command=start_cmd,
            python=python,
            apt=args.apt,
            vendor=True if args.vendor else None,
            deps=not args.no_deps,
            client_src=args.client,
        )
        if done["deps"] == "missing":
            print(
                "The plug-in is installed, but GIMP's Python cannot talk to the server yet "
                "(see above). Then run: python -m installer --check"
            )
            return 2
        print("Done. Restart GIMP, then check everything with: python -m installer --check")
        return 0
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
