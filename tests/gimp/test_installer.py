"""The installer without GIMP: plug-in folders per platform, install / update / uninstall,
the config file, the Python-module probe, and (network) vendoring pyzmq for another Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import installer
from installer import (
    CLIENT_NAME,
    CONFIG_NAME,
    GimpInstall,
    InstallError,
    check,
    find_gimp,
    install,
    install_for,
    main,
    print_checks,
    probe_python,
    rebind,
    start_problem,
    uninstall,
    user_plugin_dir,
)


def test_user_plugin_dir_per_platform(tmp_path):
    home = tmp_path
    assert user_plugin_dir("Linux", {}, home) == home / ".config/GIMP/3.0/plug-ins"
    assert user_plugin_dir("Linux", {"XDG_CONFIG_HOME": "/x"}, home) == Path("/x/GIMP/3.0/plug-ins")
    assert user_plugin_dir("Linux", {}, home, series="3.2") == home / ".config/GIMP/3.2/plug-ins"
    assert user_plugin_dir("Linux", {"GIMP3_DIRECTORY": "/g"}, home) == Path("/g/plug-ins")
    assert user_plugin_dir("Darwin", {}, home) == (
        home / "Library/Application Support/GIMP/3.0/plug-ins"
    )
    assert (
        user_plugin_dir("Windows", {"APPDATA": r"C:\Users\u\AppData\Roaming"}, home)
        == Path(r"C:\Users\u\AppData\Roaming") / "GIMP" / "3.0" / "plug-ins"
    )


@pytest.fixture
def client_file(tmp_path):
    f = tmp_path / "client.py"
    f.write_text("# the server's client module\n")
    return f


def test_install_is_idempotent_and_keeps_settings(tmp_path, client_file):
    pdir = tmp_path / "plug-ins"
    logs = []
    install(
        pdir,
        address="tcp://127.0.0.1:6000",
        start_command=[sys.executable, "--x"],
        deps=False,
        client_src=client_file,
        log=logs.append,
    )
    folder = pdir / "ganpaint"
    main_file = folder / "ganpaint.py"
    assert main_file.read_text().startswith("#!/usr/bin/env python3")
    assert os.access(main_file, os.X_OK)
    assert (folder / CLIENT_NAME).read_text() == client_file.read_text()
    assert (folder / "ganpaint_support.py").is_file()
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg["address"] == "tcp://127.0.0.1:6000"
    assert cfg["start_command"] == [sys.executable, "--x"]
    assert cfg["serve_hint"] == f"{sys.executable} --x"

    # A second run changes nothing it need not: settings stay, leftovers go, vendor/ stays.
    (folder / "old_module.py").write_text("")
    (folder / "vendor").mkdir()
    (folder / "vendor" / "keep.txt").write_text("")
    before = sorted(p.name for p in folder.iterdir())
    install(pdir, deps=False, client_src=client_file, log=logs.append)
    cfg2 = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg2 == cfg
    after = sorted(p.name for p in folder.iterdir())
    assert after == sorted(set(before) - {"old_module.py"})
    assert (folder / "vendor" / "keep.txt").exists()

    assert uninstall([pdir], log=logs.append) == 1
    assert not folder.exists()
    assert uninstall([pdir], log=logs.append) == 0


def test_uninstall_refuses_foreign_folder(tmp_path):
    (tmp_path / "ganpaint").mkdir()
    (tmp_path / "ganpaint" / "something.txt").write_text("")
    with pytest.raises(InstallError):
        uninstall([tmp_path], log=lambda s: None)


def test_no_start_command(tmp_path, client_file):
    install(tmp_path, start_command=None, deps=False, client_src=client_file, log=lambda s: None)
    cfg = json.loads((tmp_path / "ganpaint" / CONFIG_NAME).read_text())
    assert cfg["start_command"] is None
    assert cfg["serve_hint"] == "ganpaint serve"


def test_cli_install_check_uninstall(tmp_path, client_file, capsys):
    pdir = tmp_path / "p"
    assert (
        main(
            [
                "--plugin-dir",
                str(pdir),
                "--no-deps",
                "--no-start-command",
                "--address",
                "tcp://127.0.0.1:9",
                "--client",
                str(client_file),
            ]
        )
        == 0
    )
    assert (pdir / "ganpaint" / "ganpaint.py").exists()
    # --check: nothing answers on the discard port -> exit 1, says which link and how to fix.
    code = main(["--check", "--plugin-dir", str(pdir), "--python", sys.executable])
    out = capsys.readouterr().out
    assert code == 1
    assert "[ok] plug-in installed" in out
    assert "[FAIL] server reachable" in out
    assert "Fix:" in out
    assert main(["--uninstall", "--plugin-dir", str(pdir)]) == 0
    assert not (pdir / "ganpaint").exists()


def test_check_says_how_to_start_a_server_at_the_address_in_use(tmp_path, monkeypatch):
    """--address, or GANPAINT_ADDRESS as the plug-in reads it, overrides the installed
    address: the fix names a server there, not at the installed port."""
    from installer.common import CLIENT_SRC as client

    pdir = tmp_path / "p"
    install(pdir, address="tcp://127.0.0.1:9", start_command=None, deps=False, client_src=client)
    used = "tcp://127.0.0.1:53805"
    for address, env in ((None, used), (used, "")):
        monkeypatch.setenv("GANPAINT_ADDRESS", env)
        results = installer.check(
            pdir, gimps=[], python=[sys.executable], address=address, timeout_s=0.5
        )
        server = next(c for c in results if c.name == "server reachable")
        assert not server.ok and server.detail.startswith(f"{used}: unavailable"), server
        assert server.fix == f"start it: ganpaint serve --bind {used}", server


def test_install_sh_wrapper(tmp_path, client_file):
    sh = Path(installer.__file__).parent / "install.sh"
    assert os.access(sh, os.X_OK)
    r = subprocess.run(
        [str(sh), "--plugin-dir", str(tmp_path), "--no-deps", "--client", str(client_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ganpaint" / "ganpaint.py").exists()


def test_probe_python_reports_missing_modules(tmp_path):
    info = probe_python([sys.executable], None, ["json", "no_such_module_xyz"])
    assert info["modules"]["json"]["ok"]
    assert not info["modules"]["no_such_module_xyz"]["ok"]


@pytest.mark.slow
def test_vendor_for_a_python_without_zmq(tmp_path, client_file):
    """The host's system Python (no zmq) gets msgpack (pure Python) and a pyzmq wheel for its
    version in vendor/; needs PyPI."""
    py = "/usr/bin/python3"
    if not Path(py).exists():
        pytest.skip("no system python3")
    if probe_python([py], None, ["zmq"])["modules"].get("zmq", {}).get("ok"):
        pytest.skip(f"{py} already has zmq")
    if (
        subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode
        != 0
    ):
        pytest.skip("no pip in this Python")
    logs = []
    done = install(
        tmp_path,
        python=[py],
        vendor=True,
        client_src=client_file,
        start_command=None,
        log=logs.append,
    )
    if done["deps"] != "vendored" and any("could not download" in s for s in logs):
        pytest.skip("PyPI not reachable: " + "; ".join(logs))
    assert done["deps"] == "vendored", logs
    info = probe_python([py], tmp_path / "ganpaint", ["zmq", "msgpack"])
    assert all(m["ok"] for m in info["modules"].values()), info
    assert "/vendor/" in info["modules"]["zmq"]["where"]
    assert "/vendor/" in info["modules"]["msgpack"]["where"]


# -- every GIMP 3 series ------------------------------------------------------------------------
@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """A user's home with no GIMP on PATH (only what each test puts in bin/)."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    for var in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(home / "bin"))
    return home


def installed_series(home: Path) -> list[str]:
    return sorted(
        p.parents[2].name for p in (home / ".config/GIMP").glob("*/plug-ins/ganpaint/ganpaint.py")
    )


def test_only_a_32_user_folder_installs_for_32(user_home, client_file, capsys):
    """A new GIMP 3.2 user: only ~/.config/GIMP/3.2 exists. The plug-in goes where 3.2 reads
    it, not into 3.0/plug-ins (which 3.2 ignores)."""
    (user_home / ".config/GIMP/3.2").mkdir(parents=True)
    found = find_gimp(ask=False)
    assert [(g.kind, g.series) for g in found] == [("folder", "3.2")]
    assert found[0].plugin_dir == user_home / ".config/GIMP/3.2/plug-ins"
    assert main(["--no-deps", "--no-start-command", "--client", str(client_file)]) == 0
    assert installed_series(user_home) == ["3.2"]
    assert not (user_home / ".config/GIMP/3.0").exists()


def test_both_series_get_the_plugin_and_uninstall_removes_all(user_home, client_file, capsys):
    """3.0 and 3.2 folders (and a copy where the old --flatpak wrote, which GIMP never read):
    install puts it in both series' folders, --uninstall removes every copy."""
    for s in ("3.0", "3.2"):
        (user_home / ".config/GIMP" / s).mkdir(parents=True)
    assert main(["--no-deps", "--no-start-command", "--client", str(client_file)]) == 0
    assert installed_series(user_home) == ["3.0", "3.2"]
    legacy = user_home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins"
    install(legacy, deps=False, start_command=None, client_src=client_file, log=lambda s: None)
    assert main(["--uninstall"]) == 0
    assert installed_series(user_home) == []
    assert not (legacy / "ganpaint").exists()


def test_gimp_on_path_is_asked_for_its_version(user_home, client_file):
    """A GIMP 3.2 executable on PATH (a stand-in answering --version, as gimp-console-3.2
    does) counts even before its user folder exists; an existing 3.0 folder counts too."""
    exe = user_home / "bin" / "gimp-console-3.2"
    exe.write_text("#!/bin/sh\necho 'GNU Image Manipulation Program version 3.2.6'\n")
    exe.chmod(0o755)
    (user_home / ".config/GIMP/3.0").mkdir(parents=True)
    found = find_gimp(ask=False)
    assert [(g.kind, g.series, g.version) for g in found] == [
        ("native", "3.2", "3.2.6"),
        ("folder", "3.0", None),
    ]
    install_for(found, deps=False, start_command=None, client_src=client_file, log=lambda s: None)
    assert installed_series(user_home) == ["3.0", "3.2"]


def test_no_gimp_at_all_installs_for_every_known_series(user_home, client_file, capsys):
    assert main(["--no-deps", "--no-start-command", "--client", str(client_file)]) == 0
    assert installed_series(user_home) == ["3.0", "3.2"]
    assert "no GIMP 3 found" in capsys.readouterr().out


# -- defect: a new --address kept the old start command and hint ---------------------------------
def test_new_address_updates_start_command_and_hint(tmp_path, client_file):
    pdir = tmp_path / "plug-ins"
    old = "tcp://127.0.0.1:6000"
    new = "tcp://127.0.0.1:6001"
    start = [sys.executable, "-m", "ganpaint.server.cli", "serve", "--bind", old]
    install(pdir, address=old, start_command=start, deps=False, client_src=client_file, log=print)
    install(pdir, address=new, deps=False, client_src=client_file, log=print)
    cfg = json.loads((pdir / "ganpaint" / CONFIG_NAME).read_text())
    assert cfg["address"] == new
    assert cfg["start_command"] == start[:-1] + [new]
    assert new in cfg["serve_hint"] and old not in cfg["serve_hint"]
    # No start command: the hint names the new address.
    install(pdir, address=old, start_command=None, deps=False, client_src=client_file, log=print)
    install(pdir, address=new, deps=False, client_src=client_file, log=print)
    cfg = json.loads((pdir / "ganpaint" / CONFIG_NAME).read_text())
    assert cfg["start_command"] is None and cfg["serve_hint"] == f"ganpaint serve --bind {new}"


def test_rebind():
    assert rebind(["g", "serve", "--bind=tcp://a:1"], "tcp://a:1", "tcp://a:2") == (
        ["g", "serve", "--bind=tcp://a:2"],
        True,
    )
    assert rebind(["g", "serve"], "tcp://a:1", "tcp://a:2") == (
        ["g", "serve", "--bind", "tcp://a:2"],
        True,
    )
    assert rebind(["my-script"], "tcp://a:1", "tcp://a:2") == (["my-script"], False)


def test_old_default_wait_is_replaced(tmp_path, client_file):
    folder = tmp_path / "ganpaint"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(json.dumps({"address": "tcp://x:1", "start_wait_s": 180.0}))
    install(tmp_path, deps=False, start_command=None, client_src=client_file, log=print)
    assert json.loads((folder / CONFIG_NAME).read_text())["start_wait_s"] == 60.0


# -- defect: a start command GIMP cannot reach --------------------------------------------
def fake_root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "usr/bin").mkdir(parents=True)
    return root


def test_start_command_outside_a_chroot_is_dropped_with_the_reason(tmp_path, client_file):
    """Installing from the host into a chroot's plug-in folder with the host's `ganpaint`:
    GIMP in the chroot cannot run it. Say so now, and configure no start command."""
    pdir = fake_root(tmp_path) / "root/.config/GIMP/3.0/plug-ins"
    host_cmd = [sys.executable, "-m", "ganpaint.server.cli", "serve"]
    logs = []
    cfg = install(
        pdir, start_command=host_cmd, deps=False, client_src=client_file, log=logs.append
    )["config"]
    text = "\n".join(logs)
    assert "another root file system" in text and sys.executable in text
    assert cfg["start_command"] is None
    assert sys.executable in cfg["serve_hint"]  # what to run on the host instead
    # --check says it too, for a config that has such a command.
    config_path = pdir / "ganpaint" / CONFIG_NAME
    config_path.write_text(json.dumps({**cfg, "start_command": host_cmd}))
    results = check(pdir, gimps=[], python=[sys.executable], timeout_s=0.5)
    start = next(c for c in results if c.name.startswith("server start command"))
    assert not start.ok and "another root file system" in start.detail


def test_start_command_for_a_flatpak_gimp(tmp_path):
    flatpak = GimpInstall("flatpak", "flatpak run org.gimp.GIMP", "3.2.6", "3.2")
    flatpak.runs_host_commands = False
    native = GimpInstall("native", "/usr/bin/gimp-3.2", "3.2.6", "3.2")
    cmd = [sys.executable, "-m", "ganpaint.server.cli", "serve"]
    problem = start_problem(cmd, [flatpak], tmp_path)
    assert "sandbox" in problem and "flatpak-spawn --host" in problem
    assert start_problem(cmd, [native], tmp_path) is None
    assert start_problem(["flatpak-spawn", "--host", *cmd], [flatpak], tmp_path) is None
    assert "does not exist" in start_problem(["/no/such/ganpaint"], [native], tmp_path)


def test_check_lists_each_gimp_and_its_folder(tmp_path, client_file):
    dirs = {s: tmp_path / s / "plug-ins" for s in ("3.0", "3.2")}
    gimps = [
        GimpInstall("native", "/usr/bin/gimp-console-3.0", "3.0.4", "3.0", plugin_dir=dirs["3.0"]),
        GimpInstall("folder", None, None, "3.2", plugin_dir=dirs["3.2"]),
    ]
    install(dirs["3.2"], deps=False, start_command=None, client_src=client_file, log=print)
    results = check(gimps=gimps, python=[sys.executable], timeout_s=0.5)
    lines = []
    print_checks(results, out=lines.append)
    text = "\n".join(lines)
    assert (
        "[ok] GIMP 3.0: GIMP 3.0.4 (native: /usr/bin/gimp-console-3.0) reads plug-ins from "
        f"{dirs['3.0']}" in text
    )
    assert (
        f"[ok] GIMP 3.2: GIMP 3.2.x (folder: no executable found) reads plug-ins from {dirs['3.2']}"
        in text
    )
    assert "[FAIL] plug-in installed for GIMP 3.0" in text
    assert "[ok] plug-in installed for GIMP 3.2" in text
