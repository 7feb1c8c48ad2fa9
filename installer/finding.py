"""Finding GIMP 3: every series installed (native, Flatpak, Snap, macOS app, Windows folder, or
only a user folder left by a GIMP we cannot see), where each one reads user plug-ins, and the
Python it runs them with.

Each GIMP series has its own user folder (``~/.config/GIMP/3.0``, ``…/3.2``): a plug-in in
``3.0/plug-ins`` is invisible to GIMP 3.2. Where GIMP's Python answers we ask GIMP's own library
(``Gimp.directory()``, plus ``plug-in-path`` from the user's gimprc); otherwise the platform's
rule.
"""

from __future__ import annotations

import json
import os
import platform
import plistlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .common import FLATPAK_ID, KNOWN_SERIES, SNAP_NAME, run

SERIES_RE = re.compile(r"^3\.\d+$")
# gimp, gimp-3, gimp-3.2, gimp-console-3.0, gimp-console.exe, …
EXE_RE = re.compile(r"^gimp(-console)?(-3(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


@dataclass
class GimpInstall:
    kind: str  # native | flatpak | snap | app | given | folder (only its user folder) | assumed
    executable: str | None
    version: str | None
    series: str  # "3.0", "3.2": names the user folder
    python: list[str] = field(default_factory=list)  # the command that runs its plug-ins
    python_source: str = ""  # how we know
    plugin_dir: Path | None = None  # the user plug-in folder this GIMP reads
    plugin_dir_source: str = ""  # how we know
    runs_host_commands: bool = True  # False inside a sandbox (Flatpak, Snap)
    note: str = ""

    def describe(self) -> str:
        v = self.version or f"{self.series}.x"
        return f"GIMP {v} ({self.kind}: {self.executable or 'no executable found'})"


def series_of(version: str | None) -> str | None:
    m = re.match(r"^(3)\.(\d+)", version or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def gimp_version(executable: str) -> str | None:
    """``gimp-console-3.x --version`` (a fraction of a second: it starts nothing)."""
    try:
        out = run([executable, "--version"], timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else None


# -- user folders ----------------------------------------------------------------------------
def config_root(system: str, environ: dict, home: Path) -> Path:
    """The folder holding one user folder per GIMP series."""
    if system == "Windows":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP"
    if system == "Darwin":
        return home / "Library" / "Application Support" / "GIMP"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP"


def user_plugin_dir(
    system: str | None = None,
    environ: dict | None = None,
    home: Path | None = None,
    series: str = KNOWN_SERIES[0],
) -> Path:
    """GIMP ``series``'s per-user plug-in folder on this platform. The Flatpak reads the same
    one (it has the permission xdg-config/GIMP), not a folder under ~/.var/app."""
    env = os.environ if environ is None else environ
    if env.get("GIMP3_DIRECTORY"):  # GIMP's own override of its user folder
        return Path(env["GIMP3_DIRECTORY"]) / "plug-ins"
    return config_root(system or platform.system(), env, home or Path.home()) / series / "plug-ins"


def snap_plugin_dir(home: Path, series: str) -> Path:
    """A Snap's $HOME is ~/snap/NAME/current: GIMP's user folder lives under it."""
    return home / "snap" / SNAP_NAME / "current" / ".config" / "GIMP" / series / "plug-ins"


# Run with GIMP's Python: GIMP's library says where this GIMP keeps its user folder, and the
# user's gimprc may move the plug-in folders (plug-in-path).
ASK = r"""
import json, os, re
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp
d = Gimp.directory()
path = "${gimp_dir}/plug-ins"
try:
    with open(os.path.join(d, "gimprc"), encoding="utf-8") as f:
        m = re.search(r'\(plug-in-path\s+"([^"]*)"\)', f.read())
    if m:
        path = m.group(1)
except OSError:
    pass
dirs = [os.path.expanduser(p.replace("${gimp_dir}", d)) for p in path.split(os.pathsep)]
print(json.dumps({"gimp_dir": d, "plug_in_path": [p for p in dirs if "${" not in p]}))
"""


def ask_plugin_dir(python: list[str], series: str) -> Path | None:
    """The user plug-in folder GIMP's own library names, or None when its Python cannot say
    (or answers for another series: one Python can only load one GIMP's library)."""
    if not python:
        return None
    try:
        r = run(python + ["-c", ASK], timeout=60)
        info = json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    gimp_dir = Path(info["gimp_dir"])
    if gimp_dir.name != series:
        return None
    for p in info.get("plug_in_path") or []:
        if gimp_dir in Path(p).parents:
            return Path(p)
    return gimp_dir / "plug-ins"


def _interp_python(prefix: Path) -> tuple[list[str], str] | None:
    """The Python named in GIMP's interpreters/*.interp files under ``prefix``."""
    for lib in ("lib", "lib64", "lib/*", "Contents/Resources/lib"):
        for d in sorted(prefix.glob(f"{lib}/gimp/3.*/interpreters")):
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


def python_for(prefix: Path | None, path: str | None = None) -> tuple[list[str], str]:
    """The Python that runs plug-ins of the GIMP installed under ``prefix``."""
    if prefix is not None:
        found = _interp_python(prefix)
        if found:
            return found
        for name in ("python3", "python3.exe", "python.exe"):
            for sub in ("bin", "Contents/MacOS", "Contents/Resources/bin"):
                p = prefix / sub / name
                if p.is_file():
                    return [str(p)], f"bundled with GIMP ({p})"
    py = shutil.which("python3", path=path)
    if py:
        return [py], "python3 on PATH (the plug-in's '#!/usr/bin/env python3')"
    return [], "no python3 found"


def _with_plugin_dir(g: GimpInstall, default: Path, ask: bool) -> GimpInstall:
    asked = ask_plugin_dir(g.python, g.series) if ask else None
    if asked is not None:
        g.plugin_dir, g.plugin_dir_source = asked, "asked GIMP (Gimp.directory(), gimprc)"
    else:
        g.plugin_dir, g.plugin_dir_source = default, "this platform's rule for GIMP " + g.series
    return g


# -- the kinds of install ----------------------------------------------------------------------
def _native(system: str, env: dict, home: Path, ask: bool) -> list[GimpInstall]:
    """GIMPs on PATH, one per series."""
    path = env.get("PATH", "")
    names: set[str] = set()
    for d in filter(None, path.split(os.pathsep)):
        try:
            names.update(n for n in os.listdir(d) if EXE_RE.match(n))
        except OSError:
            continue
    found: dict[str, GimpInstall] = {}
    seen: set[Path] = set()
    # gimp-console-3.x first: it needs no display, and its name says its series.
    for name in sorted(names, key=lambda n: ("console" not in n, -len(n), n)):
        exe = shutil.which(name, path=path)
        if not exe or Path(exe).resolve() in seen:
            continue
        seen.add(Path(exe).resolve())
        version = gimp_version(exe)
        series = series_of(version)
        if series is None or series in found:
            continue
        py, src = python_for(Path(exe).resolve().parent.parent, path)
        g = GimpInstall("native", exe, version, series, py, src)
        found[series] = _with_plugin_dir(g, user_plugin_dir(system, env, home, series), ask)
    return list(found.values())


def _mac_apps(env: dict, home: Path) -> list[GimpInstall]:
    found = []
    for root in (Path("/Applications"), home / "Applications"):
        for app in sorted(root.glob("GIMP*.app")):
            exe = app / "Contents" / "MacOS" / "gimp"
            try:
                with open(app / "Contents" / "Info.plist", "rb") as f:
                    version = str(plistlib.load(f).get("CFBundleShortVersionString") or "")
            except (OSError, plistlib.InvalidFileException):
                version = gimp_version(str(exe)) or ""
            series = series_of(version)
            if exe.exists() and series:
                py, src = python_for(app)
                g = GimpInstall("app", str(exe), version, series, py, src)
                default = user_plugin_dir("Darwin", env, home, series)
                found.append(_with_plugin_dir(g, default, False))
    return found


def _windows(env: dict, home: Path) -> list[GimpInstall]:
    found = []
    roots = [env.get("ProgramFiles", r"C:\Program Files"), env.get("LOCALAPPDATA", "")]
    for root in filter(None, roots):
        folders = [*Path(root).glob("GIMP 3*"), *Path(root, "Programs").glob("GIMP 3*")]
        for d in sorted(folders):
            for exe in sorted((d / "bin").glob("gimp*-3*.exe")):
                m = re.search(r"-(3\.\d+)\.exe$", exe.name)
                version = gimp_version(str(exe))
                series = series_of(version) or (m.group(1) if m else None)
                if series and all(g.series != series for g in found):
                    py, src = python_for(d)
                    g = GimpInstall("app", str(exe), version, series, py, src)
                    found.append(
                        _with_plugin_dir(g, user_plugin_dir("Windows", env, home, series), False)
                    )
    return found


def _packaged_gimp(env: dict, tool: str, args: list[str], pattern: str):
    """Ask a package manager (flatpak, snap) for its GIMP: (tool path, version, series), or
    None when the tool is missing, fails, or reports no GIMP 3 series."""
    path = shutil.which(tool, path=env.get("PATH"))
    if not path:
        return None
    try:
        r = run([path, *args], timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, r.stdout, re.MULTILINE)
    series = series_of(m.group(1) if m else None)
    if r.returncode != 0 or series is None:
        return None
    return path, m.group(1), series


def _flatpak(env: dict, home: Path, ask: bool) -> list[GimpInstall]:
    found = _packaged_gimp(env, "flatpak", ["info", FLATPAK_ID], r"Version:\s*(\S+)")
    if found is None:
        return []
    flatpak, version, series = found
    g = GimpInstall(
        "flatpak",
        f"flatpak run {FLATPAK_ID}",
        version,
        series,
        [flatpak, "run", "--command=python3", FLATPAK_ID],
        "the Flatpak's python3",
        runs_host_commands=False,
        note="runs in a sandbox: it cannot run commands of the host (start the server yourself)",
    )
    return [_with_plugin_dir(g, user_plugin_dir("Linux", env, home, series), ask)]


def _snap(env: dict, home: Path) -> list[GimpInstall]:
    found = _packaged_gimp(env, "snap", ["list", SNAP_NAME], rf"^{SNAP_NAME}\s+(\S+)")
    if found is None:
        return []
    _, version, series = found
    return [
        GimpInstall(
            "snap",
            f"snap run {SNAP_NAME}",
            version,
            series,
            [],
            "the Snap's own Python (not reachable from outside the Snap)",
            snap_plugin_dir(home, series),
            "the Snap's $HOME (~/snap/gimp/current)",
            runs_host_commands=False,
            note="confined: it cannot run commands of the host, and its Python lacks zmq "
            "until vendored; plug-ins packaged as a content snap are connected with "
            "`snap connect gimp:gimp-plugins SNAP:gimp-plugins` (plugin/README.md)",
        )
    ]


def _folders(system: str, env: dict, home: Path, have: set[str], path: str) -> list[GimpInstall]:
    """User folders of series we found no GIMP for: such a GIMP has run here (one we cannot
    see from here, or installed since)."""
    root = config_root(system, env, home)
    try:
        series = sorted(p.name for p in root.iterdir() if SERIES_RE.match(p.name) and p.is_dir())
    except OSError:
        return []
    py, src = python_for(None, path)
    return [
        GimpInstall(
            "folder",
            None,
            None,
            s,
            py,
            src,
            root / s / "plug-ins",
            f"GIMP {s}'s user folder {root / s} exists",
        )
        for s in series
        if s not in have
    ]


def find_gimp(
    gimp: str | None = None,
    *,
    system: str | None = None,
    environ: dict | None = None,
    home: Path | None = None,
    ask: bool = True,
) -> list[GimpInstall]:
    """Every GIMP 3 we can see, one entry per (kind, series), the most likely first.
    ``ask``: ask GIMP's Python where its user folder is (off for tests of the rules)."""
    env = os.environ if environ is None else environ
    system = system or platform.system()
    home = home or Path.home()
    path = env.get("PATH")
    if gimp:
        exe = shutil.which(gimp, path=path) or gimp
        version = gimp_version(exe)
        series = series_of(version) or series_of(Path(exe).name.split("-")[-1]) or KNOWN_SERIES[0]
        prefix = Path(exe).resolve().parent.parent if Path(exe).exists() else None
        py, src = python_for(prefix, path)
        g = GimpInstall("given", exe, version, series, py, src)
        return [_with_plugin_dir(g, user_plugin_dir(system, env, home, series), ask)]
    found = _native(system, env, home, ask)
    if system == "Darwin":
        found += _mac_apps(env, home)
    if system == "Windows":
        found += _windows(env, home)
    if system == "Linux":
        found += _flatpak(env, home, ask) + _snap(env, home)
    found += _folders(system, env, home, {g.series for g in found}, path or "")
    return found


def assumed(system: str | None = None, environ: dict | None = None, home: Path | None = None):
    """No GIMP found at all: the user folders of every known series (a GIMP installed later
    then finds the plug-in)."""
    env = os.environ if environ is None else environ
    py, src = python_for(None, env.get("PATH"))
    return [
        GimpInstall(
            "assumed",
            None,
            None,
            s,
            py,
            src,
            user_plugin_dir(system, env, home, s),
            "no GIMP found: GIMP " + s + "'s usual folder",
        )
        for s in KNOWN_SERIES
    ]


def by_folder(gimps: list[GimpInstall]) -> dict[Path, list[GimpInstall]]:
    """Plug-in folder -> the GIMPs reading it (a native and a Flatpak 3.2 share one)."""
    out: dict[Path, list[GimpInstall]] = {}
    for g in gimps:
        if g.plugin_dir is not None:
            out.setdefault(g.plugin_dir, []).append(g)
    return out


def root_of(folder: Path) -> Path | None:
    """The root file system ``folder`` lies in when that is not this one's (a chroot or a
    container's tree seen from the host): the nearest ancestor with etc/os-release and usr/bin."""
    for p in Path(os.path.abspath(folder)).parents:
        if p == Path(p.anchor):
            return None
        if (p / "etc" / "os-release").exists() and (p / "usr" / "bin").is_dir():
            return p
    return None
