"""The plug-in in a real GIMP 3 (gimp-console-3.0 in a Debian trixie chroot) against the real
`ganpaint serve` with the default model.

    sudo .venv/bin/pytest -m gimp tests/gimp -v

First run builds the chroot (~1.5 min); each GIMP run then takes a few seconds plus the job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gimp_env import (
    CHROOT_PLUGIN_DIR,
    CHROOT_SRC,
    GIMP_CONSOLE,
    RootBuildFailed,
    RootUnavailable,
    ensure_root,
    free_port,
    make_photo,
    run_batch_script,
)
from PIL import Image

pytestmark = pytest.mark.gimp

SIZE = 256  # the test photo: a portrait drawn by the default model, enlarged
OFFSET = (20, 12)  # canvas grown around the photo: the layer is not at 0,0
# A feathered ellipse over the upper-left of the head (as in `ganpaint demo`), image coords.
ELLIPSE = [
    int(0.22 * SIZE) + OFFSET[0],
    int(0.10 * SIZE) + OFFSET[1],
    int(0.32 * SIZE),
    int(0.24 * SIZE),
]
STEPS = 50  # keep each run short on CPU


@pytest.fixture(scope="session")
def photo(gimp) -> dict:
    """A real photo-like image made in code: a generator sample, enlarged to 256 px."""
    arr = make_photo(SIZE, seed=3)
    path = gimp.path("/tmp/ganpaint-test/photo.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return {"inside": "/tmp/ganpaint-test/photo.png", "array": arr}


@pytest.fixture(scope="session")
def concept(installed) -> dict:
    """What to add/remove: the server's first concept, or (a server without a concept
    library) explicit units; with the layer name the plug-in must give the result."""
    from ganpaint.server.client import ganpaint_client as gc

    c = gc.Client(installed["address"])
    try:
        names = [x["name"] for x in c.concepts()]
    finally:
        c.close()
    if names:
        return {"args": {"concept": names[0]}, "label": names[0]}
    return {"args": {"units": "3,17,42,57,99"}, "label": "units 3,17,42,57,99"}


def run_batch(gimp, name: str, params: dict, timeout: float = 600, env=None) -> dict:
    out_inside = f"/tmp/ganpaint-test/{name}"
    info, run = run_batch_script(gimp, {"out": out_inside, **params}, timeout, env)
    assert info is not None, f"GIMP run failed (exit {run.returncode}):\n{run.output}"
    info["dir"], info["log"], info["seconds"] = gimp.path(out_inside), run.output, run.seconds
    return info


def layer_array(info: dict, layer: dict, channels: int = 4) -> np.ndarray:
    dtype = np.uint16 if "u16" in info["format"] else np.uint8
    raw = (info["dir"] / layer["file"]).read_bytes()
    return np.frombuffer(raw, dtype=dtype).reshape(layer["h"], layer["w"], channels)


def selection(info: dict) -> np.ndarray:
    raw = (info["dir"] / "selection.raw").read_bytes()
    return np.frombuffer(raw, np.uint8).reshape(info["image"]["h"], info["image"]["w"])


def check_new_layer(info: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The new layer sits right above the source, inside it, named ``name``, opaque as the
    source where the selection is above 0 and transparent elsewhere; returns (new layer's
    pixels, the source's pixels under it, the selection under it)."""
    assert info["status"] == "success", info.get("message") or info["log"]
    layers = info["layers"]
    assert len(layers) == 2, layers
    new, src = layers[0], layers[1]
    assert new["name"] == name
    assert info["source_index"] == 1  # the new layer is directly above the source
    assert src["x"] <= new["x"] and new["x"] + new["w"] <= src["x"] + src["w"]
    assert src["y"] <= new["y"] and new["y"] + new["h"] <= src["y"] + src["h"]
    # Only the selection's box plus context was sent, not the whole layer.
    assert new["w"] * new["h"] < src["w"] * src["h"]
    a_new = layer_array(info, new)
    a_src = layer_array(info, src)
    y0, x0 = new["y"] - src["y"], new["x"] - src["x"]
    under = a_src[y0 : y0 + new["h"], x0 : x0 + new["w"]]
    sel = selection(info)[new["y"] : new["y"] + new["h"], new["x"] : new["x"] + new["w"]]
    assert (a_new[..., 3][sel == 0] == 0).all()
    assert np.array_equal(a_new[..., 3][sel > 0], under[..., 3][sel > 0])
    return a_new, under, sel


def test_add_concept_makes_a_new_layer(gimp, installed, photo, concept):
    info = run_batch(
        gimp,
        "add",
        {
            "photo": photo["inside"],
            "canvas_offset": OFFSET,
            "ellipse": ELLIPSE,
            "feather": 8,
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "strength": "high", "steps": STEPS},
        },
    )
    new, under, sel = check_new_layer(info, f"GANPaint: add {concept['label']} (high, faithful)")
    # History: the settings are kept with the layer (persistent, undoable parasite).
    settings = json.loads(info["layers"][0]["parasite"])
    box = [info["layers"][0][k] for k in ("x", "y", "w", "h")]
    assert info["layers"][0]["parasite_flags"] == 3
    assert settings["op"] == "add" and settings["strength"] == "high"
    assert settings["quality"] == "faithful" and settings["steps"] == STEPS
    assert settings["source_layer"] == info["source_name"] and settings["box"] == box
    assert settings["psnr_keep"] == round(info["values"][1], 2)
    assert settings.get("concept") == concept["args"].get("concept")
    # The photo stays the active layer, not the cropped result.
    assert info["selected"] == [info["source_name"]]
    src = layer_array(info, info["layers"][1])
    # The source layer is never modified.
    assert np.array_equal(src[..., :3], photo["array"])
    # Outside the selection the colour stays the source's (under alpha 0); inside: changed.
    assert np.array_equal(new[..., :3][sel == 0], under[..., :3][sel == 0])
    changed = (new[..., :3] != under[..., :3]).any(axis=2)
    assert changed[sel == 255].mean() > 0.3, changed[sel == 255].mean()
    assert not changed[sel == 0].any()
    # The exported (flattened) image: outside the selection equal to the photo.
    after = np.asarray(Image.open(info["dir"] / "after.png").convert("RGB"))
    ox, oy = OFFSET
    region = after[oy : oy + SIZE, ox : ox + SIZE]
    full_sel = selection(info)[oy : oy + SIZE, ox : ox + SIZE]
    assert np.array_equal(region[full_sel == 0], photo["array"][full_sel == 0])
    assert (region[full_sel == 255] != photo["array"][full_sel == 255]).any(axis=1).mean() > 0.3
    print(f"add {concept['label']}: {info['seconds']:.1f} s in GIMP")


def test_no_selection_fails_clearly(gimp, installed, photo, concept):
    info = run_batch(
        gimp,
        "nosel",
        {
            "photo": photo["inside"],
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "steps": STEPS},
        },
    )
    assert info["status"] == "execution-error"
    assert "no selection" in info["message"]
    assert "Select the area" in info["message"]
    assert len(info["layers"]) == 1  # nothing added


def test_selection_off_the_layer_fails_clearly(gimp, installed, photo, concept):
    info = run_batch(
        gimp,
        "offlayer",
        {
            "photo": photo["inside"],
            "canvas_offset": OFFSET,
            "ellipse": [0, 0, 16, 10],
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "steps": STEPS},
        },
    )
    assert info["status"] == "execution-error"
    assert "selection is empty on the active layer" in info["message"]
    assert len(info["layers"]) == 1


def test_remove_concept_16_bit(gimp, installed, photo, concept):
    info = run_batch(
        gimp,
        "remove16",
        {
            "photo": photo["inside"],
            "precision": "u16",
            "ellipse": ELLIPSE,
            "feather": 4,
            "procedure": "plug-in-ganpaint-remove",
            # Everywhere: the published remove, whether or not the model finds the concept
            # in this synthetic photo (so that something changes to check).
            "args": {
                **concept["args"],
                "steps": STEPS,
                "fast": True,
                "strength": "low",
                "everywhere": True,
            },
        },
    )
    new, under, sel = check_new_layer(info, f"GANPaint: remove {concept['label']} (low, fast)")
    # The "Fast" switch reached the server: the job ran the fast path.
    jobs = [ln for ln in Path(installed["log"]).read_text().splitlines() if ": edit " in ln]
    assert jobs and "quality=fast" in jobs[-1], jobs
    assert json.loads(info["layers"][0]["parasite"]).get("everywhere") is True
    assert new.dtype == np.uint16
    assert np.array_equal(new[..., :3][sel == 0], under[..., :3][sel == 0])
    assert (new[..., :3] != under[..., :3]).any(axis=2)[sel == 255].mean() > 0.1


def test_reconstruct_without_selection(gimp, installed, photo):
    info = run_batch(
        gimp,
        "reconstruct",
        {
            "photo": photo["inside"],
            "procedure": "plug-in-ganpaint-reconstruct",
            "args": {"steps": STEPS},
        },
    )
    assert info["status"] == "success", info.get("message") or info["log"]
    assert info["layers"][0]["name"].startswith("GANPaint: reconstruction (")
    assert info["values"][1] > 10  # PSNR of the fit, dB


@pytest.mark.parametrize("family", ["stylegan2", "stylegan3"])
def test_a_model_added_with_models_add_is_offered_and_runs(
    gimp, installed, photo, tmp_path, family
):
    """A StyleGAN2 or StyleGAN3-T pickle added to the running server's models config
    (`ganpaint models add`) is in the list the plug-in's model choice is filled from, and a
    plug-in run that names it is served by it."""
    import subprocess
    import sys

    from stylegan_layouts import sg3_init_kwargs, sg3_state_dict, write_nvidia_pickle

    from ganpaint.server.client import ganpaint_client as gc

    pkl, name = tmp_path / "tiny.pkl", f"tiny-{family}"
    if family == "stylegan3":
        write_nvidia_pickle(pkl, sg3_state_dict("t"), sg3_init_kwargs("t"))
    else:
        write_nvidia_pickle(pkl)
    env = {**os.environ, "GANPAINT_DATA": str(installed["data"])}
    cmd = [sys.executable, "-m", "ganpaint.server.cli", "models", "add", str(pkl)]
    r = subprocess.run([*cmd, "--name", name], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    c = gc.Client(installed["address"])
    try:
        offered = {m["id"]: m for m in c.models()}  # what server_lists puts in the choice
    finally:
        c.close()
    assert offered[name]["family"] == family
    info = run_batch(
        gimp,
        f"added-{family}",
        {
            "photo": photo["inside"],
            "procedure": "plug-in-ganpaint-reconstruct",
            "args": {"steps": 3, "model": name},
        },
    )
    assert info["status"] == "success", info.get("message") or info["log"]
    served = installed["log"].read_text(errors="replace")
    assert f"model={name}" in served


def test_unknown_concept_is_a_clear_server_error(gimp, installed, photo):
    info = run_batch(
        gimp,
        "unknown",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "procedure": "plug-in-ganpaint-add",
            "args": {"concept": "no-such-concept-xyz", "steps": STEPS},
        },
    )
    assert info["status"] == "execution-error"
    assert "no-such-concept-xyz" in info["message"]
    assert len(info["layers"]) == 1


def test_status_reports_the_server(gimp, installed):
    info = run_batch(
        gimp,
        "status",
        {"photo": "/tmp/ganpaint-test/photo.png", "procedure": "plug-in-ganpaint-status"},
    )
    assert info["status"] == "success", info.get("message")
    assert installed["address"] in info["values"][0]
    assert "digiface-dcgan64" in info["values"][0]
    # Defect: "gimp_flush(): error: Broken pipe" from the plug-in after every call.
    assert "ganpaint.py: gimp_flush(): error" not in info["log"], info["log"]


def run_without_server(gimp, name: str, params: dict) -> dict:
    """run_batch with the plug-in pointed at the discard port, where nothing answers."""
    cfg_path = gimp.path(f"{CHROOT_PLUGIN_DIR}/ganpaint/ganpaint.json")
    saved = cfg_path.read_text()
    cfg_path.write_text(json.dumps({**json.loads(saved), "address": "tcp://127.0.0.1:9"}))
    try:
        return run_batch(gimp, name, params)
    finally:
        cfg_path.write_text(saved)


def test_server_down_says_how_to_start_it(gimp, installed, photo):
    info = run_without_server(
        gimp,
        "down",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "procedure": "plug-in-ganpaint-add",
            "args": {"concept": "tree", "steps": STEPS},
        },
    )
    assert info["status"] == "execution-error"
    assert "no server answers at tcp://127.0.0.1:9" in info["message"]
    assert "ganpaint serve" in info["message"]


def test_server_down_at_the_address_in_use(gimp, installed, photo):
    """GANPAINT_ADDRESS in GIMP's environment overrides the installed address: the message
    names a server there and how to start one there, not at the installed port."""
    address = f"tcp://127.0.0.1:{free_port()}"
    info = run_batch(
        gimp,
        "down-env",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "procedure": "plug-in-ganpaint-add",
            "args": {"concept": "tree", "steps": STEPS},
        },
        env={"GANPAINT_ADDRESS": address},
    )
    assert info["status"] == "execution-error"
    assert f"no server answers at {address}" in info["message"], info["message"]
    assert f"ganpaint serve --bind {address}" in info["message"], info["message"]
    assert installed["address"] not in info["message"]


def test_installer_check_in_the_chroot(gimp, installed):
    r = gimp.run(
        [
            "sh",
            "-c",
            f"cd {CHROOT_SRC} && python3 -m installer --check --plugin-dir {CHROOT_PLUGIN_DIR}",
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for link in (
        "GIMP 3",
        "plug-in installed",
        "Python modules for GIMP",
        "server reachable",
        "model",
    ):
        assert f"[ok] {link}" in r.stdout, r.stdout


def test_learn_concept_from_selection(gimp, installed, photo):
    info = run_batch(
        gimp,
        "learn",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "feather": 4,
            "procedure": "plug-in-ganpaint-learn",
            "args": {"name": "test-blob"},
        },
    )
    assert len(info["layers"]) == 1  # learning adds no layer
    if info["status"] != "success" and "no concept library" in info.get("message", ""):
        pytest.skip("this server has no concept library: " + info["message"])
    assert info["status"] == "success", info.get("message") or info["log"]
    assert info["values"][0] == "test-blob"


def test_installer_found_this_gimp_and_its_folder(installed):
    """Run as a user would (no --plugin-dir): it finds this GIMP and asks it for its folder."""
    out = installed["install_output"]
    assert f"(native: /usr/bin/{GIMP_CONSOLE}) reads plug-ins from {CHROOT_PLUGIN_DIR}" in out, out
    assert f"{CHROOT_PLUGIN_DIR}/ganpaint" in out


def test_host_start_command_cannot_reach_the_chroot_gimp(gimp, tmp_path):
    """Installing from the host into a plug-in folder inside the chroot, with the host's
    `ganpaint serve` as start command: GIMP in the chroot could never run it. The installer
    says so and configures none; --check says so for a config that has one."""
    import sys

    import installer

    pdir = gimp.path("/tmp/ganpaint-reach/plug-ins")
    shutil.rmtree(pdir.parent, ignore_errors=True)
    logs = []
    host = [sys.executable, "-m", "ganpaint.server.cli", "serve"]
    done = installer.install(pdir, start_command=host, deps=False, log=logs.append)
    assert done["config"]["start_command"] is None
    assert any("another root file system" in line for line in logs), logs
    config = pdir / "ganpaint" / "ganpaint.json"
    config.write_text(json.dumps({**done["config"], "start_command": host}))
    results = installer.check(pdir, gimps=[], python=[sys.executable], timeout_s=0.5)
    start = next(c for c in results if c.name.startswith("server start command"))
    assert not start.ok and "another root file system" in start.detail
    shutil.rmtree(pdir.parent)


def test_second_edit_works_on_the_photo(gimp, installed, photo, concept):
    """After one edit the photo stays the active layer: a second Add on the same selection
    (run on whatever is selected then, as the menu does) edits the photo with the first
    result over it, not the first layer alone, and its layer goes above the first."""
    info = run_batch(
        gimp,
        "twice",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "feather": 4,
            "procedure": "plug-in-ganpaint-add",
            "repeat": 2,
            "args": {**concept["args"], "steps": STEPS, "fast": True, "strength": "low"},
        },
    )
    assert [r["status"] for r in info["runs"]] == ["success", "success"], info["runs"]
    assert len(info["layers"]) == 3
    first, second = (json.loads(layer["parasite"]) for layer in info["layers"][:2])
    assert first["source_layer"] == second["source_layer"] == info["source_name"]
    assert first["box"] == second["box"]
    assert info["selected"] == [info["source_name"]]


def test_selection_partly_off_the_layer_is_reported(gimp, installed, photo, concept):
    """A selection reaching past the layer: the part off the layer is left out and the
    plug-in says how much, before the job (so no server is needed to see it)."""
    info = run_without_server(
        gimp,
        "partly-off",
        {
            "photo": photo["inside"],
            "canvas_offset": OFFSET,
            "ellipse": [0, 0, 80, 80],
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "steps": STEPS, "fast": True},
        },
    )
    assert "no server answers" in info["message"]  # it got past the selection checks
    sel = selection(info)
    ox, oy = OFFSET
    total = int((sel > 0).sum())
    on_layer = int((sel[oy : oy + SIZE, ox : ox + SIZE] > 0).sum())
    assert 0 < on_layer < total
    left_out = f"{total - on_layer:,}".replace(",", " ")
    assert f"{left_out} of the {total:,}".replace(",", " ") in info["log"], info["log"]
    assert "lie outside the layer" in info["log"]


@pytest.mark.parametrize(
    "case, params, words",
    [
        ("group", {"group": True}, "is a layer group"),
        ("indexed", {"indexed": True}, "indexed (palette) image"),
        ("whole", {"select_all": True}, "covers 100% of the layer"),
    ],
)
def test_refused_with_a_clear_message(gimp, installed, photo, concept, case, params, words):
    """A layer group (its composite is not a layer's pixels), an indexed image (scripts can
    run the procedure on one; the result would be palette-reduced) and a whole-image
    selection (nothing of the photo would be kept) are refused before any job."""
    info = run_batch(
        gimp,
        f"refuse-{case}",
        {
            "photo": photo["inside"],
            "ellipse": ELLIPSE,
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "steps": STEPS},
            **params,
        },
    )
    assert info["status"] == "execution-error"
    assert words in info["message"], info["message"]
    assert len(info["top_level"]) == 1  # nothing added
    if case == "group":
        assert info["in_group"] == [info["source_name"]]


def _plugin_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(c.endswith(b"/ganpaint/ganpaint.py") for c in cmd):
                pids.append(int(d.name))
    return pids


def test_killed_plugin_cancels_its_job(gimp, installed, photo, concept):
    """GIMP's Cancel kills the plug-in (SIGKILL, see gimp_plug_in_close()); the plug-in's watchdog
    then cancels the job on the server at once: the server's log names a client's cancel, not
    its heartbeat timeout (10 s), as the reason."""
    from ganpaint.server.client import ganpaint_client as gc

    box = {}
    t = threading.Thread(
        target=lambda: box.update(
            info=run_batch(
                gimp,
                "killed",
                {
                    "photo": photo["inside"],
                    "ellipse": ELLIPSE,
                    "procedure": "plug-in-ganpaint-add",
                    "args": {**concept["args"], "steps": 9000},
                },
            )
        )
    )
    t.start()
    c = gc.Client(installed["address"])
    try:
        deadline = time.monotonic() + 120
        running = None
        while time.monotonic() < deadline and not running:
            running = c.status().get("running")
            time.sleep(0.3)
        assert running, "the job never started"
        pids = _plugin_pids()
        assert pids
        # status shows another client's job only by an opaque label: find the
        # job in the log lines written from the kill on.
        seen = len(Path(installed["log"]).read_text().splitlines())
        for pid in pids:  # as GIMP does: the plug-in shares GIMP's process group
            os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        while c.status().get("running") and time.monotonic() - t_kill < 30:
            time.sleep(0.2)
        stopped_after = time.monotonic() - t_kill
        assert not c.status().get("running")
        log = Path(installed["log"]).read_text().splitlines()[seen:]
        assert any("cancelled by" in ln and "client" in ln for ln in log), log  # the watchdog
        assert not any("no heartbeat" in ln for ln in log), log
        print(f"job cancelled {stopped_after:.1f} s after the plug-in was killed")
    finally:
        c.close()
        t.join(timeout=300)
    assert box["info"]["status"] != "success"
    assert len(box["info"]["layers"]) == 1


@pytest.mark.slow
def test_dialog_ok_runs_the_edit(gimp, installed, concept):
    """The interactive path in GIMP's GUI (Xvfb): the dialog lists the server's concepts, OK
    runs the edit with the progress bar, the new layer appears."""
    if "concept" not in concept["args"]:
        pytest.skip("the dialog needs a concept; this server has none")
    from make_screenshots import EXTRA, run_gui

    try:
        ensure_root(gimp.root, EXTRA)  # adds xvfb, xdotool, ImageMagick, openbox if missing
    except (RootUnavailable, RootBuildFailed) as e:
        pytest.skip(f"cannot add the GUI packages: {e}")
    params = {
        "ellipse": [100, 110, 40, 22],
        "feather": 8,
        "op": "add",
        "concept": concept["args"]["concept"],
        "strength": "med",
        "steps": STEPS,
    }
    log_before = installed["log"].read_text(errors="replace")
    info = run_gui(gimp, make_photo(SIZE, seed=0), params, job_wait=300)
    assert info.get("status") == "success", info["log"] + info["gimp_log"][-3000:]
    # While the dialog was open the plug-in had the region inverted (docs/protocol.md
    # §6.7a): the server ran a prepare job, and the edit on OK found its session.
    served = installed["log"].read_text(errors="replace")[len(log_before) :].splitlines()
    jobs = [
        line.split("ganpaint serve: ", 1)[-1]
        for line in served
        if " edit " in line or " prepare " in line
    ]
    assert [j.split()[0] for j in jobs] == ["prepare", "edit"], served
    assert "session=reused" in jobs[1], jobs
    # ... and it had ended before OK was pressed (the driver waits 4 s in the dialog): the
    # inversion overlapped the user's choosing instead of queueing in front of the edit.
    ended = next(line for line in served if " prepare " in line).split()[0]  # HH:MM:SS
    ok_at = time.strftime("%H:%M:%S", time.localtime(info["done_time"] - info["ok_to_layer_s"]))
    assert ended <= ok_at, (ended, ok_at)
    assert info["layers"][1:] == ["Background"]
    assert info["layers"][0].startswith(f"GANPaint: add {concept['label']} (med, ")
    dialog = Image.open(info["dir"] / "dialog.png")
    assert dialog.width > 300 and dialog.height > 150
    print(f"GUI run: {info['seconds']:.1f} s")


@pytest.mark.slow
def test_installer_finds_missing_modules_and_installs_them_with_apt(gimp, installed):
    """Debian's GIMP runs plug-ins with /usr/bin/python3: without python3-zmq the installer
    says which apt command fixes it, --check names the broken link, --apt installs them."""
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    r = gimp.run(apt + ["remove", "-y", "python3-zmq"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        install = (
            f"cd {CHROOT_SRC} && python3 -m installer --plugin-dir {CHROOT_PLUGIN_DIR} "
            f"--address {installed['address']} --no-start-command"
        )
        r = gimp.run(["sh", "-c", install])
        assert r.returncode == 2, r.stdout + r.stderr
        assert "apt-get install -y python3-zmq python3-msgpack" in r.stdout
        r = gimp.run(
            [
                "sh",
                "-c",
                f"cd {CHROOT_SRC} && python3 -m installer --check --plugin-dir {CHROOT_PLUGIN_DIR}",
            ]
        )
        assert r.returncode == 1
        assert "[FAIL] Python modules for GIMP" in r.stdout
        assert (
            "First broken link: Python modules for GIMP. Fix: python -m installer --apt" in r.stdout
        )
        r = gimp.run(["sh", "-c", install + " --apt"], timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        gimp.run(apt + ["install", "-y", "--no-install-recommends", "python3-zmq"], timeout=300)
    r = gimp.run(["python3", "-c", "import zmq"])
    assert r.returncode == 0


def canvas(info: dict, name: str) -> np.ndarray:
    """A flattened canvas the batch script saved, cropped to the photo ([SIZE, SIZE, 3])."""
    ox, oy = OFFSET
    full = np.asarray(Image.open(info["dir"] / name).convert("RGB"))
    return full[oy : oy + SIZE, ox : ox + SIZE].astype(int)


def on_photo(info: dict, name: str) -> np.ndarray:
    """An edit's selection (selection<i>.raw) over the photo, [SIZE, SIZE] uint8."""
    ox, oy = OFFSET
    raw = (info["dir"] / name).read_bytes()
    sel = np.frombuffer(raw, np.uint8).reshape(info["image"]["h"], info["image"]["w"])
    return sel[oy : oy + SIZE, ox : ox + SIZE]


def layer_on_photo(info: dict, layer: dict) -> np.ndarray:
    """A result layer's RGBA placed over the photo's area (transparent where it has none)."""
    ox, oy = OFFSET
    out = np.zeros((SIZE, SIZE, 4), int)
    x, y = layer["x"] - ox, layer["y"] - oy
    out[y : y + layer["h"], x : x + layer["w"]] = layer_array(info, layer)
    return out


# Two edits: the second ellipse overlaps the first, or lies beside it (disjoint selections
# whose crops, selection plus context, overlap).
STACKS = {
    "overlapping": [ELLIPSE[0] + 28, ELLIPSE[1] + 14, ELLIPSE[2], ELLIPSE[3]],
    "neighbouring": [ELLIPSE[0] + ELLIPSE[2] + 24, ELLIPSE[1], 56, ELLIPSE[3]],
}


@pytest.mark.parametrize("case", [*sorted(STACKS), "neighbouring, in a layer group"])
def test_result_layers_stack(gimp, installed, photo, concept, case):
    """Two edits, as a user makes them: each result layer holds only its edit (transparent
    outside its selection) and goes above the earlier one, in the source's layer group; the
    canvas shows both without a seam, and hiding a layer takes exactly that edit away."""
    grouped = case.endswith("group")
    case = case.split(",")[0]
    info = run_batch(
        gimp,
        f"stack-{case}{'-grouped' if grouped else ''}",
        {
            "photo": photo["inside"],
            "canvas_offset": OFFSET,
            "group": "source" if grouped else None,
            "edits": [
                {"ellipse": ELLIPSE, "feather": 8},
                {"ellipse": STACKS[case], "feather": 8},
            ],
            "procedure": "plug-in-ganpaint-add",
            "args": {**concept["args"], "steps": STEPS, "fast": True, "strength": "high"},
        },
    )
    assert [r["status"] for r in info["runs"]] == ["success", "success"], info["runs"]
    second, first, src = info["layers"]
    assert src["name"] == info["source_name"] and info["source_index"] == 2
    if grouped:
        assert info["top_level"] == ["Group"]
        assert info["in_group"] == [second["name"], first["name"], src["name"]]
    assert info["selected"] == [info["source_name"]]
    sel1, sel2 = on_photo(info, "selection0.raw"), on_photo(info, "selection1.raw")
    if case == "neighbouring":
        assert not ((sel1 > 0) & (sel2 > 0)).any()
        assert first["x"] + first["w"] > second["x"]  # the crops overlap
    else:
        assert ((sel1 == 255) & (sel2 == 255)).sum() > 500
    l1, l2 = layer_on_photo(info, first), layer_on_photo(info, second)
    # Each layer is opaque exactly on its selection, transparent elsewhere.
    assert np.array_equal(l1[..., 3] > 0, sel1 > 0) and (l1[..., 3][sel1 > 0] == 255).all()
    assert np.array_equal(l2[..., 3] > 0, sel2 > 0) and (l2[..., 3][sel2 > 0] == 255).all()
    image = photo["array"].astype(int)
    after1, both = canvas(info, "after0.png"), canvas(info, "after1.png")
    # No seam: outside both selections the canvas is the photo, bit for bit, also where
    # the first layer's rectangle ends inside the second one's.
    outside = (sel1 == 0) & (sel2 == 0)
    assert np.array_equal(both[outside], image[outside])
    # The canvas shows exactly what each edit computed: the second on its selection, the
    # first elsewhere; both edits are visible.
    assert np.array_equal(both[sel2 > 0], l2[..., :3][sel2 > 0])
    assert np.array_equal(both[sel2 == 0], after1[sel2 == 0])
    only1 = (sel1 == 255) & (sel2 == 0)
    assert (both[only1] != image[only1]).any(axis=1).mean() > 0.3
    full2 = sel2 == 255
    assert (both[full2] != after1[full2]).any(axis=1).mean() > 0.3
    # Hiding the second layer gives the canvas after the first edit; hiding the first
    # gives the photo wherever the second edit did not paint.
    assert np.array_equal(canvas(info, "hidden0.png"), after1)
    hidden1 = canvas(info, "hidden1.png")
    assert np.array_equal(hidden1[sel2 == 0], image[sel2 == 0])
    assert np.array_equal(hidden1[sel2 > 0], l2[..., :3][sel2 > 0])
    if case == "overlapping":
        # The second edit read what the user saw (the photo with the first edit): at its
        # soft rim, where it changes little, its layer shows the first edit, not the photo.
        rim = (sel1 == 255) & (sel2 > 0) & (sel2 < 40)
        to_first = np.abs(l2[..., :3][rim] - after1[rim]).mean()
        to_photo = np.abs(l2[..., :3][rim] - image[rim]).mean()
        print(f"rim {rim.sum()} px: second - first edit {to_first:.2f}, - photo {to_photo:.2f}")
        assert to_first < to_photo / 2
    print(f"{case}: {info['seconds']:.1f} s in GIMP")
