"""Copying the plug-in into GIMP's plug-in folders and writing its ganpaint.json (server
address, the command that starts the server, how long to wait for it), and removing it again.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

from .common import (
    CLIENT_NAME,
    CLIENT_SRC,
    CONFIG_NAME,
    DEFAULT_ADDRESS,
    FLATPAK_ID,
    KNOWN_SERIES,
    OLD_START_WAIT_S,
    PLUGIN_NAME,
    PLUGIN_SRC,
    REPO,
    START_WAIT_S,
    TIMEOUT_S,
    InstallError,
)
from .finding import GimpInstall, config_root, root_of, user_plugin_dir


def default_start_command(address: str) -> list[str] | None:
    """`ganpaint serve --bind ADDRESS` from the environment running the installer, when it
    has one."""
    scripts = Path(sys.executable).parent
    exe = next(
        (str(scripts / n) for n in ("ganpaint", "ganpaint.exe") if (scripts / n).is_file()), None
    ) or shutil.which("ganpaint")
    return [exe, "serve", "--bind", address] if exe else None


def rebind(command: list[str], old: str | None, new: str) -> tuple[list[str], bool]:
    """``command`` made to listen on ``new``: (command, whether it names the address). The
    old address is replaced wherever it appears (``--bind OLD``, ``--bind=OLD``); a
    `… serve` command without one gets ``--bind NEW``."""
    out, named = [], False
    for i, arg in enumerate(command):
        if arg == old or (i > 0 and command[i - 1] == "--bind"):
            out.append(new)
            named = True
        elif arg.startswith("--bind="):
            out.append(f"--bind={new}")
            named = True
        else:
            out.append(arg)
    if not named and "serve" in out:
        out += ["--bind", new]
        named = True
    return out, named


def default_hint(address: str) -> str:
    return "ganpaint serve" + ("" if address == DEFAULT_ADDRESS else f" --bind {address}")


def _runnable(path: Path) -> bool:
    return path.is_file() and (os.name == "nt" or os.access(path, os.X_OK))


def _interpreter(exe: Path) -> str | None:
    """A script's #! interpreter (a virtual environment's python), if any."""
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode("utf-8", "replace").split()
    return parts[0] if parts and parts[0] != "/usr/bin/env" else None


def start_problem(start: list[str] | None, gimps: list[GimpInstall], folder: Path) -> str | None:
    """Why GIMP reading ``folder`` cannot run the start command ``start`` (None: it can, or
    there is none). GIMP in a Flatpak or a Snap cannot run the host's programs; GIMP in a
    chroot or container sees other files than the installer does."""
    if not start:
        return None
    hint = shlex.join(start)
    boxed = [g for g in gimps if not g.runs_host_commands]
    if boxed and start[0] != "flatpak-spawn":
        g = boxed[0]
        if g.kind == "flatpak":
            return (
                f"{g.describe()} runs in a sandbox and cannot run {start[0]}. Start the server "
                f"yourself ({hint}), or allow the Flatpak to run it on the host: flatpak "
                f"override --user --talk-name=org.freedesktop.Flatpak {FLATPAK_ID}, then "
                f"reinstall with --start-command 'flatpak-spawn --host {hint}'"
            )
        return f"{g.describe()} is confined and cannot run {start[0]}: start the server ({hint})"
    if start[0] == "flatpak-spawn":
        return None
    root = root_of(folder)
    exe = Path(start[0])
    if root is not None:
        seen = root / str(exe).lstrip("/\\") if exe.is_absolute() else None
        if seen is None or not _runnable(seen):
            return (
                f"{folder} lies in another root file system ({root}: a chroot or container), "
                f"where {exe} does not exist: GIMP there cannot start the server. Start it "
                f"yourself ({hint}), or pass --start-command with a command that exists in {root}"
            )
        interp = _interpreter(seen)
        if interp and not _runnable(root / interp.lstrip("/")):
            return f"{exe} in {root} needs {interp}, which {root} lacks: start the server ({hint})"
        return None
    found = shutil.which(str(exe))
    if not found:
        return f"the start command {exe} does not exist: start the server yourself ({hint})"
    interp = _interpreter(Path(found))
    if interp and not _runnable(Path(interp)):
        return f"{exe} needs {interp}, which does not exist: reinstall GANPaint's environment"
    return None


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
            "module (server/client/ganpaint_client.py)"
        )
    files[CLIENT_NAME] = client_src
    return files


def copy_plugin(
    plugin_dir: Path,
    *,
    address: str | None = None,
    start_command: list[str] | None | bool = True,
    gimps: list[GimpInstall] = (),
    client_src: Path = CLIENT_SRC,
    log=print,
) -> dict:
    """Install (or update) the plug-in folder in ``plugin_dir`` and its ganpaint.json; returns
    the config written.

    ``start_command``: True = keep the configured one (made to listen on a new ``address``) or
    detect `ganpaint serve`; False/None = none; a list = that command. A command the GIMPs
    reading this folder cannot run is dropped, with the reason.
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

    old_address = old.get("address") if isinstance(old.get("address"), str) else None
    address = address or old_address or DEFAULT_ADDRESS
    moved = old_address is not None and address != old_address
    if start_command is True:
        if "start_command" not in old:
            start = default_start_command(address)
        elif old["start_command"] and moved:
            start, named = rebind(list(old["start_command"]), old_address, address)
            if not named:
                log(
                    f"note: the start command {shlex.join(start)} does not name the address; "
                    f"make sure it listens on {address}"
                )
        else:
            start = old["start_command"] or None
    else:
        start = start_command or None
    problem = start_problem(start, list(gimps), plugin_dir)
    shared = any(not g.runs_host_commands for g in gimps) and any(
        g.runs_host_commands for g in gimps
    )
    if problem and not shared:  # no GIMP reading this folder could run it: do not let it try
        log(f"warning: {problem}; the plug-in will not try to start the server")
        hint, start = shlex.join(start), None
    elif problem:  # a native GIMP shares the folder with a sandboxed one: it can use it
        log(f"warning: {problem}")
        hint = shlex.join(start)
    elif start:
        hint = shlex.join(start)
    elif old.get("serve_hint") and not moved:
        hint = old["serve_hint"]
    else:
        hint = default_hint(address)
    wait = old.get("start_wait_s", START_WAIT_S)
    config = {
        "address": address,
        "start_command": start,
        "timeout_s": old.get("timeout_s", TIMEOUT_S),
        "start_wait_s": START_WAIT_S if wait == OLD_START_WAIT_S else wait,
        "serve_hint": hint,
        "installed_from": str(REPO),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log(
        f"wrote {folder / CONFIG_NAME} (server {config['address']}, start command: "
        f"{shlex.join(start) if start else 'none'})"
    )
    return config


def remove_plugin(plugin_dir: Path, log=print) -> bool:
    folder = plugin_dir / PLUGIN_NAME
    if not folder.exists():
        return False
    if not (folder / f"{PLUGIN_NAME}.py").exists() and not (folder / CONFIG_NAME).exists():
        raise InstallError(f"{folder} does not look like the GANPaint plug-in; not removing it")
    shutil.rmtree(folder)
    log(f"removed {folder}")
    return True


def every_plugin_dir(gimps: list[GimpInstall], system=None, environ=None, home=None) -> list[Path]:
    """Every folder an install of ours may be in: those of the GIMPs found, each known
    series' usual folder, each series folder present, and where `--flatpak` wrote before
    (~/.var/app/org.gimp.GIMP/config/GIMP/3.x/plug-ins, which GIMP never read)."""
    env = os.environ if environ is None else environ
    home = home or Path.home()
    system = system or platform.system()
    dirs = [g.plugin_dir for g in gimps if g.plugin_dir is not None]
    dirs += [user_plugin_dir(system, env, home, s) for s in KNOWN_SERIES]
    for root in (config_root(system, env, home), home / ".var/app" / FLATPAK_ID / "config/GIMP"):
        if root.is_dir():
            dirs += [p / "plug-ins" for p in sorted(root.glob("3.*")) if p.is_dir()]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out
