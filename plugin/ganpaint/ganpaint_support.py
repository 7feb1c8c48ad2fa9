"""GIMP-free helpers of the GANPaint plug-in: configuration, the region sent to the server,
starting the server, cancelling a job when GIMP kills the plug-in, and user-facing messages.

Standard library only, so that it can be tested without GIMP; ``ganpaint_client`` (and with it
``zmq``/``msgpack``) is imported lazily by the functions that talk to the server.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG_NAME = "ganpaint.json"
VENDOR_DIR = HERE / "vendor"
WATCHDOG = HERE / "ganpaint_watchdog.py"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5570"
SERVE_HINT = "ganpaint serve"


# -- configuration ---------------------------------------------------------------------------
@dataclass
class Config:
    address: str = DEFAULT_ADDRESS
    start_command: list[str] | None = None  # argv; None: never start the server
    timeout_s: float = 10.0  # per request, not per job: jobs report progress
    # How long a started server may take to answer hello: it answered after 2.6-6.7 s on a
    # loaded 2-core machine (cold start imports torch); the installer writes the same default.
    start_wait_s: float = 60.0
    serve_hint: str = SERVE_HINT  # what to tell the user to run when nothing answers
    path: Path | None = None
    problems: list[str] = field(default_factory=list)


def load_config(path: Path | None = None, environ: dict | None = None) -> Config:
    """Read ganpaint.json next to the plug-in; a missing or broken file gives the defaults
    (and a note in ``problems``). ``GANPAINT_ADDRESS`` in the environment wins."""
    env = os.environ if environ is None else environ
    path = path or HERE / CONFIG_NAME
    cfg = Config(path=path)
    raw: dict = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            cfg.problems.append(f"{path}: {e}; using defaults")
            raw = {}
    if isinstance(raw.get("address"), str) and raw["address"].strip():
        cfg.address = raw["address"].strip()
    start = raw.get("start_command")
    if isinstance(start, str) and start.strip():
        cfg.start_command = shlex.split(start)
    elif isinstance(start, list) and start and all(isinstance(a, str) for a in start):
        cfg.start_command = list(start)
    for key in ("timeout_s", "start_wait_s"):
        value = raw.get(key)
        if isinstance(value, (int, float)) and value > 0:
            setattr(cfg, key, float(value))
    if isinstance(raw.get("serve_hint"), str) and raw["serve_hint"].strip():
        cfg.serve_hint = raw["serve_hint"].strip()
    if env.get("GANPAINT_ADDRESS") and env["GANPAINT_ADDRESS"] != cfg.address:
        cfg.serve_hint = " ".join(listening_on(cfg.serve_hint.split(" "), cfg.address, env))
        if cfg.start_command:
            cfg.start_command = listening_on(cfg.start_command, cfg.address, env)
        cfg.address = env["GANPAINT_ADDRESS"]
    return cfg


def listening_on(command: list[str], configured: str, env: dict) -> list[str]:
    """A `ganpaint serve` command (hint or start command) made to listen where
    GANPAINT_ADDRESS points instead of the configured address: every mention of that address
    is replaced; a `serve` that names none gets ``--bind``."""
    address = env["GANPAINT_ADDRESS"]
    if any(configured in word for word in command):
        return [word.replace(configured, address) for word in command]
    return command + ["--bind", address] if "serve" in command else command


def add_vendor_path() -> None:
    """Make copies of zmq/msgpack vendored by the installer importable (after GIMP's own
    site-packages, so that system packages win)."""
    for p in (str(HERE), str(VENDOR_DIR)):
        if Path(p).is_dir() and p not in sys.path:
            sys.path.append(p)


def import_client():
    """Import ganpaint_client, or raise RuntimeError with what to do."""
    add_vendor_path()
    try:
        import ganpaint_client
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise RuntimeError(
            f"GANPaint cannot talk to its server: GIMP's Python ({sys.executable}, "
            f"{sys.version.split()[0]}) lacks the module '{missing}'. Re-run the installer "
            "(python -m installer, from the GANPaint folder) and then "
            "'python -m installer --check'; on Debian/Ubuntu: "
            "sudo apt install python3-zmq python3-msgpack"
        ) from e
    return ganpaint_client


# -- the region sent to the server -----------------------------------------------------------
@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def x2(self) -> int:
        return self.x + self.w

    @property
    def y2(self) -> int:
        return self.y + self.h

    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, other: Rect) -> Rect:
        x, y = max(self.x, other.x), max(self.y, other.y)
        x2, y2 = min(self.x2, other.x2), min(self.y2, other.y2)
        return Rect(x, y, max(0, x2 - x), max(0, y2 - y))


def model_resolution(info: dict, model: str | None) -> int:
    """The resolution of ``model`` (None: the server's default) in the server's hello; 64
    for one it does not list."""
    want = model or info.get("default_model")
    for m in info.get("models", []):
        if m.get("id") == want and m.get("resolution"):
            return int(m["resolution"])
    return 64


def crop_region(selection: Rect, layer: Rect, context: float, min_px: int = 64) -> Rect:
    """The square the server crops around the selection, as far as it lies on the layer: the
    selection's bounding box's longer side × (1 + 2·``context``), at least ``min_px`` (the
    server's model resolution) and at most the layer's longer side, centred on the box and
    moved onto the layer where it fits (core/photo.py ``selection_box``, the same rule). All
    in image coordinates; ``context`` is the server's (``crop_context`` in its hello). A
    smaller crop would make the server fill the rest of its square with repeated border
    pixels: another inversion, another edit than the same selection on the whole layer."""
    box = selection.intersect(layer)
    if box.empty():
        return box
    side = max(box.w, box.h)
    size = max(min_px, int(round(side * (1 + 2 * context))))
    size = max(min(size, max(layer.w, layer.h)), side)

    def place(centre: float, start: int, extent: int) -> int:
        if size > extent:  # the server centres it on the layer (and repeats the border)
            return start + int(round((extent - size) / 2))
        return min(max(int(round(centre - size / 2)), start), start + extent - size)

    x = place(box.x + box.w / 2, layer.x, layer.w)
    y = place(box.y + box.h / 2, layer.y, layer.h)
    return Rect(x, y, size, size).intersect(layer)


def bytes_per_channel(dtype: str) -> int:
    return 2 if dtype == "u16" else 1


def u16_to_little_endian(data: bytes) -> bytes:
    """babl's u16 is native-endian; the wire format is little-endian."""
    if sys.byteorder == "little":
        return data
    import array

    a = array.array("H", data)
    a.byteswap()
    return a.tobytes()


u16_from_little_endian = u16_to_little_endian


def with_opaque_alpha(data: bytes, dtype: str) -> bytes:
    """RGB pixels ("u8" or native-endian "u16" channels) -> RGBA with alpha at its maximum.

    The plug-in reads an alpha-less layer in its own format and adds alpha here: babl's
    conversion R'G'B' -> R'G'B'A took 0.3-0.6 s for a 160 px crop in every plug-in run
    (GIMP 3.0.4: its fish cache was never kept), this takes milliseconds at any size."""
    import array

    if dtype == "u8":
        rgb, rgba = data, bytearray(len(data) // 3 * 4)
        full = b"\xff"
    elif dtype == "u16":
        rgb = array.array("H", data)
        rgba = array.array("H", bytes(len(rgb) // 3 * 8))
        full = array.array("H", [0xFFFF])
    else:
        raise ValueError(f"dtype must be u8 or u16, not {dtype!r}")
    if len(rgb) % 3:
        raise ValueError("RGB data must hold 3 channels per pixel")
    n = len(rgb) // 3
    for c in range(3):
        rgba[c::4] = rgb[c::3]
    rgba[3::4] = full * n
    return bytes(rgba) if dtype == "u8" else rgba.tobytes()


def layer_name(
    op: str,
    concept: str | None = None,
    units: list[int] | None = None,
    strength: str | None = None,
    quality: str | None = None,
) -> str:
    """What a result layer is called: what was done, and with which settings (the Layers
    dialog is the history of results), e.g. ``GANPaint: add tree (high, fast)``."""
    settings = ", ".join(s for s in (strength, quality) if s)
    tail = f" ({settings})" if settings else ""
    if op == "reconstruct":
        return f"GANPaint: reconstruction{tail}"
    if concept:
        return f"GANPaint: {op} {concept}{tail}"
    if units:
        shown = ",".join(str(u) for u in units[:8]) + ("…" if len(units) > 8 else "")
        return f"GANPaint: {op} units {shown}{tail}"
    return f"GANPaint: {op}{tail}"


def edit_note(op: str, concept: str | None, metrics: dict | None) -> str | None:
    """What to tell the user after an edit that changed nothing because the concept was not
    found (the server's ``present_fraction`` is 0), else None."""
    if op != "remove" or not metrics or metrics.get("present_fraction") != 0:
        return None
    what = concept or "the concept"
    return (
        f"GANPaint: the model finds no {what} in the selection, so the new layer is the photo "
        "as it was. To switch it off there anyway, run Remove Concept… with "
        "'Remove everywhere selected'."
    )


PARASITE = "ganpaint-settings"  # on each result layer: what made it, as JSON
EDIT_OPS = ("add", "remove")  # results that stack: a later edit reads them with the photo


def settings_record(**settings) -> bytes:
    """The settings kept with a result layer (a parasite), for "redo with other settings" and
    scripts: JSON of the given fields, None values left out."""
    return json.dumps(
        {"version": 1, **{k: v for k, v in settings.items() if v is not None}}, sort_keys=True
    ).encode("utf-8")


def read_settings(data: bytes) -> dict | None:
    """A result layer's kept settings (``settings_record``), or None for anything else."""
    try:
        settings = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def clear_unselected(data: bytes, mask: bytes, dtype: str) -> bytes:
    """RGBA pixels ("u8", or little-endian "u16" channels) with alpha set to 0 where ``mask``
    ('Y u8', one byte a pixel) is 0; alpha elsewhere and all colours as they were.

    A result layer is transparent outside the selection: whatever the server sent there (the
    photo) then never covers the layers below."""
    size = bytes_per_channel(dtype)
    if len(data) != len(mask) * 4 * size:
        raise ValueError(f"{len(data)} bytes of {dtype} RGBA do not match a {len(mask)}-pixel mask")
    keep = mask.translate(bytes([0]) + bytes([255]) * 255)  # 0 stays 0, anything else 0xff
    out = bytearray(data)
    for byte in range(3 * size, 4 * size):  # the alpha channel's bytes
        alpha = out[byte :: 4 * size]
        kept = int.from_bytes(alpha, "little") & int.from_bytes(keep, "little")
        out[byte :: 4 * size] = kept.to_bytes(len(alpha), "little")
    return bytes(out)


def concepts_for(concepts: list[dict], op: str) -> list[dict]:
    """The concepts a dialog offers for ``op`` ("add"/"remove"): those whose ``ops`` list it;
    a server that sends no ``ops`` allows both."""
    out = []
    for c in concepts:
        ops = c.get("ops")
        if not isinstance(ops, (list, tuple)) or op in ops:
            out.append(c)
    return out


def parse_units(text: str) -> list[int] | None:
    """'3, 17 42' -> [3, 17, 42]; '' -> None. ValueError with a message on junk."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"units must be whole numbers separated by commas, got {text!r}") from None


# -- progress ----------------------------------------------------------------------------------
STAGE_WORDS = {
    "invert": "fitting the photo",
    "adapt": "adapting the generator",
    "edit": "rendering the edit",
    "learn": "learning the concept",
    "queue": "waiting in the server's queue",
    "queued": "waiting in the server's queue",
    "connecting": "waiting for a free connection to the server (it serves a few clients at once)",
}


def progress_text(title: str, p: dict) -> tuple[str, float | None]:
    """A progress message from the server -> (status line, fraction or None)."""
    stage = str(p.get("stage") or "")
    step, total = p.get("step"), p.get("total")
    parts = [f"{title}: {STAGE_WORDS.get(stage, stage) or 'working'}"]
    if stage in ("queue", "queued") and isinstance(p.get("position"), int) and p["position"] > 0:
        parts.append(f"{p['position']} job(s) ahead")
    frac = None
    if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
        parts.append(f"{int(step)}/{int(total)}")
        frac = min(1.0, max(0.0, step / total))
    psnr = p.get("psnr_keep")
    if isinstance(psnr, (int, float)):
        parts.append(f"fit {psnr:.1f} dB")
    eta = p.get("eta_s")
    if isinstance(eta, (int, float)) and eta >= 0.5:
        parts.append(f"about {eta:.0f} s left")
    return " · ".join(parts), frac


# -- messages ------------------------------------------------------------------------------------
NO_SELECTION = (
    "GANPaint: there is no selection. Select the area to change first (for example "
    "with the Free Select tool, feathered if you like), then run the filter again."
)
EMPTY_SELECTION = (
    "GANPaint: the selection is empty on the active layer: nothing of the layer "
    "is selected. Select part of the layer itself, then run the filter again."
)
NO_LAYER = "GANPaint: pick one layer to work on (the filter works on a single layer)."
GROUP_LAYER = (
    "GANPaint: '{name}' is a layer group. Pick one of its layers, or merge the group "
    "(Layer › Merge Layer Group) first: GANPaint repaints the pixels of one layer."
)
INDEXED_IMAGE = (
    "GANPaint: this is an indexed (palette) image; GANPaint works on RGB and grayscale images "
    "(a palette would reduce the result to its colours). Convert it with Image › Mode › RGB "
    "first."
)
# Refuse when this much of the layer is selected: the method keeps the unselected pixels and
# fits the generator to them; with (almost) everything selected nothing of the photo is kept,
# and the result is the generator's own picture at its resolution (64 px for the default
# model) enlarged to the photo's size.
MAX_SELECTED_FRACTION = 0.9
# Warn above this: less than half of the photo is left to fit to. A colour change keeps the
# photo's detail, but whatever the edit draws anew in so large an area is drawn at the
# generator's resolution (64 px for the default model).
WARN_SELECTED_FRACTION = 0.5


def selection_size_check(selected: int, layer_pixels: int) -> tuple[str | None, str | None]:
    """(refusal, warning) for a selection of ``selected`` pixels on a layer of
    ``layer_pixels``; None where there is nothing to say."""
    if layer_pixels <= 0:
        return None, None
    frac = selected / layer_pixels
    if frac >= MAX_SELECTED_FRACTION:
        return (
            f"GANPaint: the selection covers {frac:.0%} of the layer (Select All?). GANPaint "
            "repaints only the selected area and keeps the rest of the photo; with "
            "everything selected nothing would be kept and the whole layer would become the "
            "model's low-resolution picture. Select just the area to change.",
            None,
        )
    if frac >= WARN_SELECTED_FRACTION:
        return None, (
            f"GANPaint: the selection covers {frac:.0%} of the layer, so less than half of the "
            "photo is left to fit the model to. Colour changes keep the photo's detail, but "
            "what the edit draws anew is drawn at the model's resolution and looks soft at "
            "this size; a smaller selection keeps more of the photo."
        )
    return None, None


def outside_note(selected_total: int, selected_on_layer: int, layer: str) -> str | None:
    """Say how much of the selection lies outside the layer (and is left out)."""
    left_out = selected_total - selected_on_layer
    if left_out <= 0 or selected_on_layer <= 0:
        return None
    return (
        f"GANPaint: {left_out:,} of the {selected_total:,} selected pixels lie outside the "
        f"layer '{layer}' and were left out; only the part on the layer is repainted."
    ).replace(",", " ")


def unavailable_message(cfg: Config, started: bool = False, log: Path | None = None) -> str:
    if started:
        where = f" Its output is in {log}." if log else ""
        return (
            f"GANPaint: the server was started ({' '.join(cfg.start_command or [])}) but "
            f"did not answer at {cfg.address} within {cfg.start_wait_s:.0f} s, so it was "
            f"stopped again.{where} Check that the command listens on {cfg.address} "
            "(python -m installer --check)."
        )
    return (
        f"GANPaint: no server answers at {cfg.address}. Start it in a terminal with:\n"
        f"    {cfg.serve_hint}\n"
        "and run the filter again (or let the installer configure a start command: "
        "python -m installer --start-command ...)."
    )


# Ask before an edit that would draw more than this share of the selection anew (the
# server's estimate, before the fit; docs/protocol.md §6.7): that part looks soft.
CONFIRM_REPLACED = 0.5
QUESTION_CODES = ("would_replace",)  # error codes that are a question to the user


def question(err: Exception) -> str:
    """The text of the question a QUESTION_CODES reply asks (would_replace)."""
    text = (getattr(err, "message", None) or str(err)).strip().rstrip(".")
    return (
        f"GANPaint: {text}.\n\nNew content is drawn at the model's own resolution; a "
        "smaller selection, or one that covers only what should change colour, keeps more "
        "of the photo. Run the edit anyway?"
    )


def ask_first(call, ask, errors=Exception):
    """call(confirm=True): a job that may stop before its long part with a question (an
    error whose code is in QUESTION_CODES); ask(text) -> bool answers it. Yes: the job runs
    again, call(confirm=False); no: None. Other errors go to the caller."""
    try:
        return call(True)
    except errors as e:
        if getattr(e, "code", None) not in QUESTION_CODES:
            raise
        if not ask(question(e)):
            return None
    return call(False)


def error_message(err: Exception, cfg: Config) -> str:
    """A ganpaint_client.ServerError (or anything) -> one clear message for the user."""
    code = getattr(err, "code", None)
    text = getattr(err, "message", None) or str(err)
    if code == "unavailable":
        return unavailable_message(cfg)
    if code == "timeout":
        return (
            f"GANPaint: the server at {cfg.address} stopped answering (no reply within "
            f"{cfg.timeout_s:.0f} s). It may be overloaded or stuck: look at the terminal "
            "running 'ganpaint serve', or raise \"timeout_s\" in "
            f"{cfg.path or CONFIG_NAME}."
        )
    if code == "cancelled":
        # This plug-in never cancels a job while it is alive (GIMP's Cancel kills it), so the
        # job was stopped by someone else: the server shutting down, or another client.
        if "shutting down" in text or "shut down" in text:
            return (
                f"GANPaint: the server at {cfg.address} stopped (it was shut down) before the "
                f"job finished. Start it again with:\n    {cfg.serve_hint}\nand run the filter "
                "again."
            )
        return f"GANPaint: the server cancelled the job ({text}); run the filter again."
    if code == "busy":
        return f"GANPaint: the server is busy with another job; try again when it is done. ({text})"
    if code == "too_large":
        return (
            f"GANPaint: the selection is too large for the server: {text}. Select a smaller area."
        )
    if code == "unknown_concept":
        return (
            f"GANPaint: {text}. Pick one of the server's concepts (Server Status… lists "
            "them) or teach it one with Learn Concept from Selection…."
        )
    if code == "unknown_model":
        return f"GANPaint: {text}. Server Status… lists the models the server has."
    if code == "bad_request":
        return f"GANPaint: the server rejected the request: {text}"
    if code:
        return f"GANPaint: the server failed ({code}): {text}"
    return f"GANPaint: {type(err).__name__}: {text}"


# -- server start ---------------------------------------------------------------------------------
def probe(address: str, timeout_s: float = 2.0) -> tuple[dict | None, Exception | None]:
    """hello() once, quickly: (info, None) or (None, the error)."""
    client_mod = import_client()
    client = client_mod.Client(address, timeout_s=timeout_s, retries=1)
    try:
        return client.hello(), None
    except client_mod.ServerError as e:
        return None, e
    finally:
        client.close()


def start_server(cfg: Config) -> tuple[subprocess.Popen, Path]:
    """Start the configured server command, detached (its own session, so that GIMP killing
    the plug-in's process group leaves it running). Output goes to a log file."""
    if not cfg.start_command:
        raise RuntimeError("no start command configured")
    log = Path(tempfile.gettempdir()) / "ganpaint-server.log"
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": out, "stderr": subprocess.STDOUT}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
            subprocess, "DETACHED_PROCESS", 0
        )
    else:
        kwargs["start_new_session"] = True
    try:
        proc = subprocess.Popen(cfg.start_command, **kwargs)
    finally:
        out.close()
    return proc, log


def stop_started(proc: subprocess.Popen) -> None:
    """Stop a server we started and gave up on: its whole session (a shell script's children
    too), politely first."""
    for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
        if proc.poll() is not None:
            return
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def waiting_text(cfg: Config, seconds: float) -> str:
    return (
        f"GANPaint: starting the server ({' '.join(cfg.start_command or [])}) · "
        f"{seconds:.0f} s (gives up after {cfg.start_wait_s:.0f} s)"
    )


def ensure_server(cfg: Config, on_wait=None) -> tuple[dict | None, str | None]:
    """(hello info, None) when a server answers, starting it first if a start command is
    configured; otherwise (None, message for the user). ``on_wait(seconds, text)`` is called
    while waiting for a started server; one that does not answer in ``cfg.start_wait_s`` is
    stopped again."""
    info, err = probe(cfg.address)
    if info is not None:
        return info, None
    if getattr(err, "code", None) not in ("unavailable", "timeout"):
        return None, error_message(err, cfg)
    if not cfg.start_command:
        return None, unavailable_message(cfg)
    try:
        proc, log = start_server(cfg)
    except (OSError, RuntimeError) as e:
        return None, (
            f"GANPaint: could not start the server with "
            f"{' '.join(cfg.start_command)}: {e}\n{unavailable_message(cfg)}"
        )
    t0 = time.monotonic()
    while time.monotonic() - t0 < cfg.start_wait_s:
        if proc.poll() is not None:
            return None, (
                f"GANPaint: the server command {' '.join(cfg.start_command)} exited "
                f"with status {proc.returncode}; its output is in {log}."
            )
        if on_wait:
            on_wait(time.monotonic() - t0, waiting_text(cfg, time.monotonic() - t0))
        left = cfg.start_wait_s - (time.monotonic() - t0)
        info, err = probe(cfg.address, timeout_s=max(0.2, min(2.0, left)))
        if info is not None:
            return info, None
        time.sleep(min(0.5, max(0.0, left)))
    stop_started(proc)
    return None, unavailable_message(cfg, started=True, log=log)


# -- cancellation when GIMP kills the plug-in ---------------------------------------------------
class Watchdog:
    """A tiny detached helper process that cancels the running job on the server if this
    plug-in dies before telling it "done".

    GIMP 3.0 has no "is the progress cancelled?" call: its Cancel button (and closing the image)
    SIGKILLs the plug-in's process group. The helper lives in its own session, notices the
    broken pipe and sends ``cancel(job)`` for the job ids it was told about.
    """

    def __init__(self, address: str):
        self.proc: subprocess.Popen | None = None
        kwargs: dict = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
        }
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            kwargs["start_new_session"] = True
        try:
            self.proc = subprocess.Popen([sys.executable, str(WATCHDOG), address], **kwargs)
        except OSError:
            self.proc = None  # cancelling on kill is a nicety, not a requirement

    def _send(self, line: str) -> None:
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.write((line + "\n").encode())
                self.proc.stdin.flush()
            except OSError:
                pass

    def job(self, job_id: str) -> None:
        self._send(f"job {job_id}")

    def done(self) -> None:
        self._send("done")
        if self.proc:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.proc = None


class InvertAhead:
    """Inverts the selection's region on the server while the plug-in's dialog is open.

    The server's ``prepare`` job (docs/protocol.md §6.7a) puts the inversion in the region's
    session; the edit sent on OK then skips it (≈ 0.45 s of a first fast edit's ≈ 0.8 s on
    the default model). It runs on its own connection in a thread, because the dialog holds
    the main one; any failure is dropped: the edit then inverts as it always did.
    """

    def __init__(
        self, client_mod, address: str, timeout_s: float, image, mask, model, quality=None
    ):
        self.model, self.quality = model, quality
        self.result: dict | None = None
        self._stop = threading.Event()
        args = (client_mod, address, timeout_s, image, mask)
        self._thread = threading.Thread(target=self._run, args=args, daemon=True)
        self._thread.start()

    def _run(self, client_mod, address, timeout_s, image, mask) -> None:
        client = client_mod.Client(address, timeout_s=timeout_s)
        try:
            self.result = client.prepare(
                image, mask, model=self.model, quality=self.quality, should_cancel=self._stop.is_set
            )
        except Exception:  # noqa: BLE001 - a head start only; the edit inverts by itself
            pass  # result stays None
        finally:
            client.close()

    def cancel(self) -> None:
        """Not needed after all (dialog cancelled, another model chosen)."""
        self._stop.set()

    def finish(self, wait_s: float = 5.0) -> None:
        """Wait for the thread (its job ran before the edit, so it is normally over)."""
        self._thread.join(wait_s)
