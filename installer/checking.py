"""The check (`python -m installer --check`): each link of the chain GIMP → plug-in → Python
modules → server start → server → model, for every GIMP found, and how to fix the first broken
one."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import (
    CLIENT_NAME,
    CLIENT_SRC,
    DEFAULT_ADDRESS,
    DEFAULT_MODEL,
    PLUGIN_NAME,
    PLUGIN_SRC,
    InstallError,
    run,
)
from .copying import plugin_files, read_config, rebind, start_problem
from .dependencies import apt_command, is_debian_like, probe_python
from .finding import GimpInstall, assumed, by_folder, find_gimp, python_for


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


def check_gimps(gimps: list[GimpInstall]) -> list[Check]:
    if not gimps:
        return [
            Check(
                "GIMP 3",
                False,
                "no GIMP 3 found (looked on PATH, Flatpak, Snap, the usual application folders "
                "and GIMP's user folders)",
                "install GIMP 3 (Debian 13/Ubuntu 25.04+: apt install gimp; or "
                "flatpak install flathub org.gimp.GIMP), or pass --gimp PATH",
            )
        ]
    return [
        Check(
            f"GIMP {g.series}",
            True,
            f"{g.describe()} reads plug-ins from {g.plugin_dir} ({g.plugin_dir_source})"
            + (f"; {g.note}" if g.note else ""),
        )
        for g in gimps
    ]


def check_folder(plugin_dir: Path, label: str) -> Check:
    folder = plugin_dir / PLUGIN_NAME
    main_file = folder / f"{PLUGIN_NAME}.py"
    problems = []
    if not main_file.is_file():
        problems.append(f"{main_file} missing")
    elif os.name != "nt" and not os.access(main_file, os.X_OK):
        problems.append(f"{main_file} is not executable")
    if not (folder / CLIENT_NAME).is_file():
        problems.append(f"{CLIENT_NAME} missing")
    name = f"plug-in installed{label}"
    if problems:
        return Check(
            name,
            False,
            "; ".join(problems),
            f"python -m installer --plugin-dir {shlex.quote(str(plugin_dir))}",
        )
    stale = []
    if PLUGIN_SRC.is_dir():
        try:
            for fname, src in plugin_files(CLIENT_SRC).items():
                dest = folder / fname
                if not dest.is_file() or dest.read_bytes() != src.read_bytes():
                    stale.append(fname)
        except InstallError:
            pass
    detail = f"{folder}" + (f" (differs from the sources: {', '.join(stale)})" if stale else "")
    return Check(name, True, detail, "re-run the installer to update it" if stale else "")


def check_modules(python: list[str], folder: Path, label: str) -> Check:
    info = probe_python(python, folder if folder.is_dir() else None)
    mods = info.get("modules", {})
    bad = {m: r.get("error", "") for m, r in mods.items() if not r.get("ok")}
    name = "Python modules for GIMP" + label.replace(" for GIMP", "")
    if "error" in info or bad or not mods:
        detail = info.get("error") or "; ".join(f"{m}: {e}" for m, e in bad.items())
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
        return Check(name, False, f"{' '.join(python) or 'no Python'}: {detail}", fix)
    where = ", ".join(f"{m} {r.get('version') or ''}".strip() for m, r in mods.items())
    return Check(name, True, f"{' '.join(python)} (Python {info.get('version')}): {where}")


def check_start(config: dict, gimps: list[GimpInstall], plugin_dir: Path, label: str) -> Check:
    start = config.get("start_command")
    name = f"server start command{label}"
    if not start:
        hint = config.get("serve_hint") or "ganpaint serve"
        return Check(name, True, f"none: the plug-in asks you to start the server ({hint})")
    problem = start_problem(start, gimps, plugin_dir)
    if problem:
        return Check(
            name,
            False,
            problem,
            "python -m installer --no-start-command (and start the server yourself), or "
            "--start-command with a command GIMP can run",
        )
    return Check(name, True, f"{shlex.join(start)} (waits up to {config.get('start_wait_s')} s)")


def ask_server(runner, client_dir, address: str, timeout_s: float) -> dict:
    try:
        r = run(
            runner + ["-c", HELLO, str(client_dir), address, str(timeout_s)],
            timeout=timeout_s * 4 + 30,
        )
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, Exception) as e:  # noqa: BLE001 - reported
        return {"ok": False, "code": "internal", "message": str(e)}


def check_server(
    folder: Path, config: dict, runner: list[str] | None, address: str, timeout_s: float
) -> tuple[Check, dict | None]:
    hint = config.get("serve_hint") or "ganpaint serve"
    start = config.get("start_command")
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
        check = Check(
            "server reachable",
            False,
            f"not tested ({address}): no Python with zmq+msgpack and the client module to ask with",
            "fix the links above first",
        )
        return check, None
    try:
        reply = ask_server(runner, client_dir, address, timeout_s)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if reply.get("ok"):
        h = reply["hello"]
        detail = (
            f"{address}: ganpaint {h.get('server_version', '?')}, protocol "
            f"{h.get('protocol', '?')}, device {h.get('device', '?')}"
        )
        return Check("server reachable", True, detail), reply
    fix = f"start it: {hint}" + (
        f"  (the plug-in starts it itself with {shlex.join(start)})" if start else ""
    )
    if reply.get("code") not in ("unavailable", "timeout"):
        fix = "look at the server's terminal output"
    detail = f"{address}: {reply.get('code')}: {reply.get('message')}"
    return Check("server reachable", False, detail, fix), reply


def check_model(reply: dict | None, model: str | None, hint: str) -> Check:
    if not (reply and reply.get("ok")):
        return Check("model", False, "not tested: no server answered", "fix the server link first")
    h = reply["hello"]
    want = model or DEFAULT_MODEL
    models = h.get("models_detail") or h.get("models") or []
    ids = [m.get("id") if isinstance(m, dict) else m for m in models]
    entry = next((m for m in models if (m.get("id") if isinstance(m, dict) else m) == want), None)
    unusable = isinstance(entry, dict) and (
        entry.get("available") is False or entry.get("present") is False
    )
    default = h.get("default_model")
    if entry is None or unusable:
        return Check(
            "model",
            False,
            f"{want} not available on the server (it has: {', '.join(map(str, ids)) or 'none'})",
            f"restart the server with the model: {hint} --model {want}; `ganpaint models` "
            "lists the models and where they come from",
        )
    loaded = isinstance(entry, dict) and entry.get("loaded")
    state = "loaded" if loaded else "known, loaded on first use"
    note = f"; the server's default is {default}" if default and default != want else ""
    return Check("model", True, f"{want} ({state}{note})")


def check(
    plugin_dir: Path | None = None,
    *,
    gimp: str | None = None,
    gimps: list[GimpInstall] | None = None,
    python: list[str] | None = None,
    address: str | None = None,
    model: str | None = None,
    timeout_s: float = 5.0,
) -> list[Check]:
    """Diagnose each link, for every GIMP found (or only ``plugin_dir``'s)."""
    gimps = find_gimp(gimp) if gimps is None else gimps
    results = check_gimps(gimps)
    folders = by_folder(gimps)
    if plugin_dir is not None:
        folders = {plugin_dir: folders.get(plugin_dir, [])}
    if not folders:  # nothing found: look where an install without a GIMP goes
        folders = by_folder(assumed())
    label_all = len(folders) > 1
    runner = None
    first_config: dict | None = None
    first_folder = None
    for pdir, readers in folders.items():
        series = sorted({g.series for g in readers})
        label = f" for GIMP {'/'.join(series)}" if label_all and series else ""
        results.append(check_folder(pdir, label))
        folder = pdir / PLUGIN_NAME
        pythons = [python] if python else [g.python for g in readers if g.python]
        if not pythons:
            pythons = [python_for(None)[0]]
        for py in {tuple(p): p for p in pythons}.values():
            c = check_modules(py, folder, label)
            results.append(c)
            if c.ok and runner is None:
                runner = py
        config = read_config(folder)
        results.append(check_start(config, readers, pdir, label))
        if first_config is None and (folder / CLIENT_NAME).is_file():
            first_config, first_folder = config, folder
    config = first_config or {}
    folder = first_folder or (next(iter(folders), Path(".")) / PLUGIN_NAME)
    configured = config.get("address") or DEFAULT_ADDRESS
    # As the plug-in does: GANPAINT_ADDRESS overrides the configured address.
    address = address or os.environ.get("GANPAINT_ADDRESS") or configured
    if address != configured:  # how to start a server there, not at the configured one
        hint = shlex.split(config.get("serve_hint") or "ganpaint serve")
        config = {**config, "serve_hint": shlex.join(rebind(hint, configured, address)[0])}
        if config.get("start_command"):
            config["start_command"] = rebind(config["start_command"], configured, address)[0]
    server, reply = check_server(folder, config, runner, address, timeout_s)
    results.append(server)
    results.append(check_model(reply, model, config.get("serve_hint") or "ganpaint serve"))
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
