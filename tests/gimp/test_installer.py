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
    InstallError,
    install,
    main,
    probe_python,
    uninstall,
    user_plugin_dir,
)


def test_user_plugin_dir_per_platform(tmp_path):
    home = tmp_path
    assert user_plugin_dir("Linux", {}, home) == home / ".config/GIMP/3.0/plug-ins"
    assert user_plugin_dir("Linux", {"XDG_CONFIG_HOME": "/x"}, home) == Path("/x/GIMP/3.0/plug-ins")
    assert user_plugin_dir("Linux", {}, home, flatpak=True) == (
        home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins"
    )
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
        start_command=["my-serve", "--x"],
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
    assert cfg["start_command"] == ["my-serve", "--x"]
    assert cfg["serve_hint"] == "my-serve --x"

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

    assert uninstall(pdir, log=logs.append)
    assert not folder.exists()
    assert not uninstall(pdir, log=logs.append)


def test_uninstall_refuses_foreign_folder(tmp_path):
    (tmp_path / "ganpaint").mkdir()
    (tmp_path / "ganpaint" / "something.txt").write_text("")
    with pytest.raises(InstallError):
        uninstall(tmp_path, log=lambda s: None)


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
