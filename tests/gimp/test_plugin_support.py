"""The plug-in's GIMP-free helpers (plugin/ganpaint/ganpaint_support.py)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ganpaint"
sys.path.insert(0, str(PLUGIN))
import ganpaint_support as gs  # noqa: E402

ALLOWED = {"gi", "zmq", "msgpack", "ganpaint_client", "ganpaint_support"}


@pytest.mark.parametrize("name", sorted(p.name for p in PLUGIN.glob("*.py")))
def test_plugin_imports_only_stdlib_gi_zmq_msgpack(name):
    tree = ast.parse((PLUGIN / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods = [node.module.split(".")[0]]
        else:
            continue
        for m in mods:
            assert m in sys.stdlib_module_names or m in ALLOWED, f"{name} imports {m}"


def test_crop_region_is_the_servers_square_on_the_layer():
    layer = gs.Rect(10, 20, 400, 300)
    # small box: the model's resolution, centred on it
    assert gs.crop_region(gs.Rect(100, 100, 20, 10), layer, 0.5) == gs.Rect(78, 73, 64, 64)
    # large box: its longer side × (1 + 2 × the server's context), a square
    assert gs.crop_region(gs.Rect(100, 100, 100, 40), layer, 0.5) == gs.Rect(50, 20, 200, 200)
    assert gs.crop_region(gs.Rect(100, 100, 100, 40), layer, 0.75) == gs.Rect(25, 20, 250, 250)
    # moved onto the layer where it fits, cut by it where it does not
    assert gs.crop_region(gs.Rect(10, 20, 30, 30), layer, 0.5) == gs.Rect(10, 20, 64, 64)
    assert gs.crop_region(gs.Rect(20, 40, 300, 100), layer, 0.5) == gs.Rect(10, 20, 400, 300)
    # outside the layer: empty
    assert gs.crop_region(gs.Rect(500, 500, 10, 10), layer, 0.5).empty()


def test_model_resolution_is_the_chosen_models_in_the_hello():
    info = {
        "default_model": "digiface-dcgan64",
        "models": [
            {"id": "digiface-dcgan64", "resolution": 64},
            {"id": "stylegan2-ffhq", "resolution": 1024},
        ],
    }
    assert gs.model_resolution(info, None) == 64  # the server's default
    assert gs.model_resolution(info, "stylegan2-ffhq") == 1024
    assert gs.model_resolution(info, "unknown") == 64
    assert gs.model_resolution({}, None) == 64


def test_the_servers_box_in_the_crop_is_its_box_in_the_whole_layer():
    """What the server edits, from the plug-in's crop, is what it edits from the whole layer:
    its square (core/photo.py selection_box) lies in the crop at the same place, so no
    pixel of it is a repeated border pixel that the whole layer has for real."""
    from ganpaint.core.photo import selection_box

    rng = np.random.default_rng(0)
    for _ in range(300):
        lw, lh = (int(v) for v in rng.integers(40, 900, 2))
        sw, sh = int(rng.integers(1, lw + 1)), int(rng.integers(1, lh + 1))
        sx, sy = int(rng.integers(0, lw - sw + 1)), int(rng.integers(0, lh - sh + 1))
        res = int(rng.choice([64, 256]))
        mask = np.zeros((lh, lw), np.uint8)
        mask[sy : sy + sh, sx : sx + sw] = 255
        whole = selection_box(mask, 0.5, min_size=res)
        for crop_res in (res, 1024):  # the crop for this model, or for a larger one
            c = gs.crop_region(gs.Rect(sx, sy, sw, sh), gs.Rect(0, 0, lw, lh), 0.5, crop_res)
            inner = selection_box(mask[c.y : c.y2, c.x : c.x2], 0.5, min_size=res)
            assert (inner.x0 + c.x, inner.y0 + c.y, inner.size) == (whole.x0, whole.y0, whole.size)


def test_parse_units():
    assert gs.parse_units("") is None
    assert gs.parse_units("3, 17 42") == [3, 17, 42]
    with pytest.raises(ValueError):
        gs.parse_units("3, x")


def test_progress_text():
    text, frac = gs.progress_text(
        "GANPaint: add tree",
        {"stage": "adapt", "step": 25, "total": 50, "psnr_keep": 31.23, "eta_s": 12.4},
    )
    assert frac == 0.5
    assert "25/50" in text and "31.2 dB" in text and "12 s" in text
    assert gs.progress_text("x", {"stage": "invert"})[1] is None


def test_layer_name():
    assert gs.layer_name("add", "tree") == "GANPaint: add tree"
    assert gs.layer_name("remove", "dome") == "GANPaint: remove dome"
    assert gs.layer_name("reconstruct") == "GANPaint: reconstruction"


def test_load_config(tmp_path):
    p = tmp_path / "ganpaint.json"
    assert gs.load_config(p, {}).address == gs.DEFAULT_ADDRESS
    p.write_text(
        json.dumps(
            {
                "address": "tcp://127.0.0.1:6001",
                "start_command": "ganpaint serve --bind 'tcp://x:1'",
                "timeout_s": 3,
            }
        )
    )
    cfg = gs.load_config(p, {})
    assert cfg.address == "tcp://127.0.0.1:6001"
    assert cfg.start_command == ["ganpaint", "serve", "--bind", "tcp://x:1"]
    assert cfg.timeout_s == 3.0
    assert gs.load_config(p, {"GANPAINT_ADDRESS": "tcp://h:2"}).address == "tcp://h:2"
    p.write_text("{broken")
    cfg = gs.load_config(p, {})
    assert cfg.address == gs.DEFAULT_ADDRESS and cfg.problems


def test_messages_name_the_fix():
    cfg = gs.Config(address="tcp://127.0.0.1:5570")

    class Err(Exception):
        def __init__(self, code, message):
            self.code, self.message = code, message

    assert "ganpaint serve" in gs.error_message(Err("unavailable", "x"), cfg)
    assert "timeout_s" in gs.error_message(Err("timeout", "x"), cfg)
    assert "Learn Concept" in gs.error_message(Err("unknown_concept", "no 'x'"), cfg)
    assert "smaller" in gs.error_message(Err("too_large", "big"), cfg)
    assert "selection" in gs.NO_SELECTION and "Select" in gs.NO_SELECTION


def test_address_from_the_environment_moves_the_start_hint(tmp_path):
    """GANPAINT_ADDRESS overrides the installed address: "no server answers" then says how
    to start a server there, and a configured start command listens there."""
    p = tmp_path / "ganpaint.json"
    installed = "tcp://127.0.0.1:55481"
    p.write_text(
        json.dumps({"address": installed, "serve_hint": f"ganpaint serve --bind {installed}"})
    )
    env = {"GANPAINT_ADDRESS": "tcp://127.0.0.1:53805"}
    message = gs.unavailable_message(gs.load_config(p, env))
    assert "no server answers at tcp://127.0.0.1:53805" in message
    assert "ganpaint serve --bind tcp://127.0.0.1:53805" in message
    assert "55481" not in message
    p.write_text(
        json.dumps(
            {
                "address": installed,
                "start_command": ["/venv/bin/ganpaint", "serve", f"--bind={installed}"],
                "serve_hint": "ganpaint serve",  # a hint without the address
            }
        )
    )
    cfg = gs.load_config(p, env)
    assert cfg.start_command == ["/venv/bin/ganpaint", "serve", "--bind=tcp://127.0.0.1:53805"]
    assert cfg.serve_hint == "ganpaint serve --bind tcp://127.0.0.1:53805"
    same = gs.load_config(p, {"GANPAINT_ADDRESS": installed})
    assert same.serve_hint == "ganpaint serve" and same.start_command[-1] == f"--bind={installed}"


def test_clear_unselected_keeps_colour_and_clears_alpha_outside():
    mask = bytes([0, 1, 255, 0])
    u8 = bytes([10, 20, 30, 255, 11, 21, 31, 128, 12, 22, 32, 255, 13, 23, 33, 200])
    assert gs.clear_unselected(u8, mask, "u8") == bytes(
        [10, 20, 30, 0, 11, 21, 31, 128, 12, 22, 32, 255, 13, 23, 33, 0]
    )
    import array

    px = array.array("H", [1000, 2000, 3000, 65535, 4, 5, 6, 0x1234])
    out = array.array("H", gs.clear_unselected(px.tobytes(), bytes([0, 7]), "u16"))
    assert list(out) == [1000, 2000, 3000, 0, 4, 5, 6, 0x1234]
    with pytest.raises(ValueError):
        gs.clear_unselected(u8, mask[:3], "u8")


def test_read_settings_takes_only_a_json_object():
    record = gs.settings_record(op="add", concept="tree", source_layer="Background")
    assert gs.read_settings(record)["source_layer"] == "Background"
    assert gs.read_settings(b"\xff\xfe") is None
    assert gs.read_settings(b"[1, 2]") is None


@pytest.fixture
def real_client(tmp_path, monkeypatch):
    """server/client/ganpaint_client.py importable as ganpaint_client, as the installer arranges."""
    src = Path(__file__).resolve().parents[2] / "server" / "client" / "ganpaint_client.py"
    if not src.exists():
        pytest.skip("server/client/ganpaint_client.py missing")
    (tmp_path / "ganpaint_client.py").write_bytes(src.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("ganpaint_client", None)
    yield
    sys.modules.pop("ganpaint_client", None)


def test_ensure_server_without_start_command_says_how(real_client):
    cfg = gs.Config(address="tcp://127.0.0.1:9")
    info, message = gs.ensure_server(cfg)
    assert info is None
    assert "no server answers at tcp://127.0.0.1:9" in message and "ganpaint serve" in message


@pytest.mark.slow
def test_ensure_server_starts_the_configured_command(real_client, tmp_path):
    """The plug-in starts `ganpaint serve` itself when the installer configured the command,
    detached from the plug-in (its own session), and waits for hello."""
    import os
    import signal
    import socket

    exe = Path(sys.executable).parent / "ganpaint"
    if not exe.exists():
        pytest.skip("no ganpaint command in this environment")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    pidfile = tmp_path / "pid"
    cfg = gs.Config(
        address=address,
        start_wait_s=120,
        start_command=[
            "sh",
            "-c",
            f'echo $$ > {pidfile}; exec "$0" serve --bind {address} --device cpu',
            str(exe),
        ],
    )
    waited = []
    try:
        info, message = gs.ensure_server(cfg, on_wait=lambda s, text: waited.append(s))
        assert message is None, message
        assert info["protocol"] == 2
        assert waited  # it had to wait for the server to come up
        pid = int(pidfile.read_text())
        assert os.getsid(pid) != os.getsid(0)  # survives GIMP killing the plug-in's group
        # A second call finds it running and starts nothing.
        info2, message2 = gs.ensure_server(cfg, on_wait=lambda *a: pytest.fail("started again"))
        assert message2 is None
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_layer_name_says_what_and_how():
    assert gs.layer_name("add", "tree", strength="high", quality="fast") == (
        "GANPaint: add tree (high, fast)"
    )
    assert gs.layer_name("remove", units=[3, 17], strength="low", quality="faithful") == (
        "GANPaint: remove units 3,17 (low, faithful)"
    )


def test_settings_record_is_json_without_empty_fields():
    data = json.loads(gs.settings_record(op="add", concept="tree", units=None, steps=50))
    assert data == {"version": 1, "op": "add", "concept": "tree", "steps": 50}


def test_concepts_for_lists_only_what_the_operation_allows():
    concepts = [
        {"name": "tree", "ops": ["add", "remove"]},
        {"name": "door", "ops": ["remove"]},
        {"name": "grass", "ops": ["add"]},
        {"name": "old"},  # a server without "ops": both
    ]
    assert [c["name"] for c in gs.concepts_for(concepts, "add")] == ["tree", "grass", "old"]
    assert [c["name"] for c in gs.concepts_for(concepts, "remove")] == ["tree", "door", "old"]


def test_outside_note_counts_what_was_left_out():
    note = gs.outside_note(6400, 2000, "Background")
    assert "4 400 of the 6 400 selected pixels" in note and "'Background'" in note
    assert gs.outside_note(6400, 6400, "Background") is None


def test_selection_size_check():
    refuse, warn = gs.selection_size_check(100 * 100, 100 * 100)
    assert "covers 100% of the layer" in refuse and warn is None
    refuse, warn = gs.selection_size_check(60 * 100, 100 * 100)
    assert refuse is None and "60%" in warn and "soft" in warn
    assert gs.selection_size_check(10 * 10, 100 * 100) == (None, None)


def test_server_shut_down_mid_job_is_not_called_cancelled(real_client):
    """The real server, stopped while it runs a job: the plug-in says the server stopped and
    how to start it again, not "cancelled" (the user cancelled nothing)."""
    import threading

    import ganpaint_client

    from ganpaint.server.config import ServerConfig
    from ganpaint.server.testing import running_server

    box = {}
    with running_server(ServerConfig(bind="tcp://127.0.0.1:*", device="cpu")) as srv:
        client = ganpaint_client.Client(srv.endpoint, timeout_s=10)
        img = ganpaint_client.RawImage(bytes(64 * 64 * 4), 64, 64, 4, "u8")
        started = threading.Event()

        def job():
            try:
                client.reconstruct(img, steps=10000, progress=lambda p: started.set())
            except ganpaint_client.ServerError as e:
                box["error"] = e

        t = threading.Thread(target=job)
        t.start()
        assert started.wait(120), "the job never reported progress"
    t.join(60)
    client.close()
    err = box["error"]
    cfg = gs.Config(address=srv.endpoint, serve_hint="ganpaint serve --bind x")
    message = gs.error_message(err, cfg)
    assert "cancelled" not in message.lower()
    assert "stopped" in message and "ganpaint serve --bind x" in message


def test_start_command_that_never_answers_is_stopped(real_client, tmp_path):
    """A start command that never serves: the plug-in waits start_wait_s (progress says how
    long so far and until when), then stops what it started and says so."""
    import os

    pidfile = tmp_path / "pid"
    cfg = gs.Config(
        address="tcp://127.0.0.1:9",
        start_wait_s=2.0,
        start_command=[
            "sh",
            "-c",
            f'echo $$ > {pidfile}; exec "$0" -c "import time; time.sleep(600)"',
            sys.executable,
        ],
    )
    texts = []
    info, message = gs.ensure_server(cfg, on_wait=lambda s, text: texts.append(text))
    assert info is None
    assert "did not answer at tcp://127.0.0.1:9 within 2 s" in message
    assert "stopped again" in message
    assert texts and all("gives up after 2 s" in t for t in texts)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # reaped by the plug-in: no zombie left either
        os.kill(pid, 0)


def test_default_start_wait_fits_the_server():
    # ganpaint serve answers hello within 2.6-6.7 s here (measured, see ganpaint_support)
    assert gs.Config().start_wait_s == 60.0


def test_opaque_alpha_is_added_to_each_pixel_in_8_and_16_bit():
    import array

    import numpy as np

    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = np.frombuffer(gs.with_opaque_alpha(rgb.tobytes(), "u8"), np.uint8).reshape(7, 5, 4)
    assert np.array_equal(out[..., :3], rgb) and (out[..., 3] == 255).all()
    rgb16 = np.random.default_rng(1).integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    raw = array.array("H", rgb16.ravel().tolist()).tobytes()  # native-endian, as babl gives
    out16 = np.frombuffer(gs.with_opaque_alpha(raw, "u16"), np.uint16).reshape(3, 4, 4)
    assert np.array_equal(out16[..., :3], rgb16) and (out16[..., 3] == 65535).all()
    with pytest.raises(ValueError):
        gs.with_opaque_alpha(b"\0" * 4, "u8")
    with pytest.raises(ValueError):
        gs.with_opaque_alpha(b"", "f32")


def test_invert_ahead_leaves_the_inversion_to_the_edit_and_stops_when_cancelled():
    import numpy as np

    from ganpaint.server.client import ganpaint_client as client_mod
    from ganpaint.server.config import ServerConfig
    from ganpaint.server.testing import running_server

    rng = np.random.default_rng(4)
    img = client_mod.RawImage(
        rng.integers(0, 256, (40, 48, 4), np.uint8).tobytes(), 48, 40, 4, "u8"
    )
    m = np.zeros((40, 48), np.uint8)
    m[10:30, 12:36] = 255
    mask = client_mod.RawImage(m.tobytes(), 48, 40, 1, "u8")
    lines: list[str] = []
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", steps=5, invert_steps=10, quality="fast")
    with running_server(cfg, log=lines.append) as srv:
        ahead = gs.InvertAhead(client_mod, srv.endpoint, 10.0, img, mask, None)
        ahead.finish(wait_s=60)  # what the dialog's time is for
        assert ahead.result is not None and ahead.result["session_reused"] is False
        with client_mod.Client(srv.endpoint, timeout_s=10.0) as c:
            assert c.edit(img, mask, op="add", units=[3])["session_reused"] is True
            # Cancelled at once (the dialog's Cancel): the thread ends, its socket closed.
            other = client_mod.RawImage(bytes(len(img.data)), 48, 40, 4, "u8")
            gone = gs.InvertAhead(client_mod, srv.endpoint, 10.0, other, mask, None)
            gone.cancel()
            gone.finish(wait_s=30)
            assert not gone._thread.is_alive() and gone.result is None
    assert sum(line.startswith("prepare ") for line in lines) >= 1


def test_edit_note_speaks_only_when_a_remove_found_nothing():
    note = gs.edit_note("remove", "open mouth", {"present_fraction": 0.0, "psnr_inside": None})
    assert "no open mouth in the selection" in note and "Remove everywhere selected" in note
    assert gs.edit_note("remove", None, {"present_fraction": 0})  # units: still a note
    assert gs.edit_note("remove", "open mouth", {"present_fraction": 0.25}) is None
    assert gs.edit_note("remove", "tree", {"psnr_inside": 30.0}) is None  # no probe: no claim
    assert gs.edit_note("add", "tree", {"present_fraction": 0}) is None
    assert gs.edit_note("remove", "tree", None) is None


def test_an_edit_that_would_draw_most_anew_asks_first_and_runs_only_on_yes():
    import numpy as np

    from ganpaint.server.client import ganpaint_client as client_mod
    from ganpaint.server.config import ServerConfig
    from ganpaint.server.testing import running_server

    rng = np.random.default_rng(6)
    img = client_mod.RawImage(
        rng.integers(0, 256, (320, 320, 3), np.uint8).tobytes(), 320, 320, 3, "u8"
    )
    m = np.zeros((320, 320), np.uint8)
    m[60:260, 60:260] = 255  # a crop > 4× the model's resolution
    mask = client_mod.RawImage(m.tobytes(), 320, 320, 1, "u8")
    units = list(range(0, 256, 4))  # many units at once: new structure
    lines: list[str] = []
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", steps=5, invert_steps=10, quality="fast")
    with running_server(cfg, log=lines.append) as srv:
        with client_mod.Client(srv.endpoint, timeout_s=10.0) as c:

            def call(confirm):  # the plug-in sends CONFIRM_REPLACED; 0 asks at any share
                sent = 0.0 if confirm else None
                return c.edit(img, mask, op="add", units=units, confirm_replaced=sent)

            asked: list[str] = []
            errors = client_mod.ServerError
            no = gs.ask_first(call, lambda text: asked.append(text) or False, errors)
            assert no is None and len(asked) == 1
            assert "of the selection anew" in asked[0] and asked[0].endswith("anyway?")
            yes = gs.ask_first(call, lambda text: True, errors)
            assert yes["session_reused"] and yes["metrics"]["replaced_fraction"] > 0
            with pytest.raises(errors, match="bad_request"):  # not a question: raised
                gs.ask_first(lambda confirm: c.edit(img, mask, op="add", units=[999]), bool)
    edits = [line for line in lines if line.startswith("edit ")]
    assert [" would_replace " in line for line in edits[:3]] == [True, True, False]
    assert sum("psnr_keep=" in line for line in edits) == 1  # only the yes ran to the end
