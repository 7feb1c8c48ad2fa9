"""Every request checked before any work: kinds, field types, lengths, image shapes, limits.

``parse_request(frames, header, limits, models, admit)`` turns a multipart message (the
unpacked header, then its pixel frames) into a typed request or raises ProtocolError with a
stable code. Unknown header fields are
ignored (a newer client may send more); known ones must have exactly the documented type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ganpaint.core.fast import QUALITIES

from .concept_store import DiscoverSpec
from .config import Limits
from .images import DTYPES, ImageMeta, to_array
from .protocol import (
    BAD_REQUEST,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    TOO_LARGE,
    UNKNOWN_MODEL,
    ProtocolError,
)

SIMPLE_KINDS = ("hello", "models", "concepts", "status", "cancel", "heartbeat", "chunk")
JOB_KINDS = ("reconstruct", "edit", "prepare", "learn_concept", "discover")
# Pixel frames each kind carries after the header, in this order.
FRAMES = {
    "reconstruct": ("image",),
    "edit": ("image", "mask"),
    "prepare": ("image", "mask"),
    "learn_concept": ("image", "mask"),
    "chunk": ("chunk",),
}
OPS = ("add", "remove")
STRENGTHS = ("low", "med", "high")
MAX_ID_CHARS = 64
MIN_SESSION_CHARS = 16  # a session name is a secret: long enough not to be guessed
NAME_RE = re.compile(r"^[\w][\w .\-]{0,63}$")  # concept names: one line, no path characters
MAX_GROUPS = 64
MAX_SAMPLES = 4096
MAX_UNIT = 1 << 16  # no layer has more channels; the model's own count is checked later


@dataclass
class Request:
    kind: str
    id: str = ""
    model: str | None = None  # concepts and job kinds
    job: str | None = None  # cancel and heartbeat
    all: bool = False  # concepts: hidden (unnamed) ones too
    upload: str | None = None  # chunk: the upload it belongs to
    index: int = 0  # chunk: its place in the upload, from 0
    data: bytes | memoryview | None = None  # chunk: its bytes


@dataclass
class JobRequest(Request):
    steps: int | None = None
    quality: str | None = None  # None = the server's default
    image: np.ndarray | None = None
    image_meta: ImageMeta | None = None
    mask: np.ndarray | None = None
    mask_meta: ImageMeta | None = None
    op: str = ""
    concept: str | None = None
    units: list[int] = field(default_factory=list)
    strength: str | None = None  # None = the concept's default, else core.edit.DEFAULT_STRENGTH
    leave_out: list[int] = field(default_factory=list)  # with concept: ranked units to skip
    remove_all: bool = False  # with concept and remove: ignore its presence probe
    # edit: stop before the fit (would_replace) when it would draw more than this share of
    # the selection anew; None: never ask
    confirm_replaced: float | None = None
    name: str = ""  # learn_concept
    replace: bool = False  # learn_concept, discover: may overwrite concepts of that name
    discover: DiscoverSpec | None = None
    # A client's secret naming the sessions its jobs may share (16-64 printable chars).
    session: str | None = None
    retry_key: str = ""  # set by the server: id + header digest, to spot a resent request
    scope: str = ""  # set by the server: whose cached sessions this job may use (sessions.py)

    def describe(self) -> str:
        return self.image_meta.describe() if self.image_meta else "-"


# admit(nbytes): called once a job's pixel frames are known to be valid and before they are
# copied; raises ProtocolError(busy) when the server cannot hold that many more bytes.
Admit = Callable[[int], None]


def parse_request(
    frames: list[bytes],
    header: dict,
    limits: Limits,
    models: set[str],
    admit: Admit | None = None,
) -> Request:
    """header = the unpacked frame 0; frames = the frames after it."""
    kind = _str(header, "kind", required=True, max_len=32)
    request_id = _str(header, "id", max_len=MAX_ID_CHARS) or ""
    if kind != "hello":  # hello answers any version, so a client can learn ours
        version = header.get("v")
        if type(version) is not int:
            raise ProtocolError(BAD_REQUEST, "field 'v' (protocol version) must be an integer")
        if version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                BAD_REQUEST,
                f"protocol version {version} is not supported; this server speaks "
                f"{PROTOCOL_VERSION} (and {', '.join(map(str, SUPPORTED_VERSIONS[:-1]))})",
            )
    if kind not in SIMPLE_KINDS and kind not in JOB_KINDS:
        raise ProtocolError(BAD_REQUEST, f"unknown request kind {kind!r}")
    upload = kind in FRAMES and kind != "chunk" and _bool(header, "upload")
    wanted = () if upload else FRAMES.get(kind, ())
    if len(frames) != len(wanted):
        names = ", ".join(wanted) or "none"
        raise ProtocolError(
            BAD_REQUEST,
            f"{kind} carries {len(wanted)} pixel frame(s) ({names}) after the header, "
            f"got {len(frames)}",
        )
    if kind in ("hello", "models", "status"):
        return Request(kind, request_id)
    if kind == "concepts":
        return Request(kind, request_id, model=_model(header, models), all=_bool(header, "all"))
    if kind in ("cancel", "heartbeat"):
        return Request(kind, request_id, job=_str(header, "job", required=True, max_len=64))
    if kind == "chunk":
        upload_id = _str(header, "upload", required=True, max_len=MAX_ID_CHARS)
        index = _int(header, "index", 0, limits.max_frame_bytes(), required=True)
        return Request(kind, request_id, upload=upload_id, index=index, data=frames[0])
    return _job_request(kind, request_id, header, None if upload else frames, limits, models, admit)


def upload_sizes(req: JobRequest) -> list[int]:
    """The bytes of each pixel frame a request parsed without them (``upload``) will carry."""
    return [m.nbytes for m in (req.image_meta, req.mask_meta) if m is not None]


def _job_request(
    kind: str,
    request_id: str,
    h: dict,
    frames: list[bytes] | None,
    limits: Limits,
    models: set[str],
    admit: Admit | None,
) -> JobRequest:
    """frames None: an upload's first message; everything but the pixels is checked."""
    req = JobRequest(kind, request_id, model=_model(h, models))
    req.session = _str(h, "session", max_len=MAX_ID_CHARS)
    if req.session is not None and len(req.session) < MIN_SESSION_CHARS:
        raise ProtocolError(
            BAD_REQUEST, f"field 'session' must be a secret of at least {MIN_SESSION_CHARS} chars"
        )
    if kind in ("reconstruct", "edit"):
        req.steps = _int(h, "steps", 1, limits.max_steps)
    if kind in ("reconstruct", "edit", "prepare"):  # prepare: the inversion's budget
        req.quality = _choice(h, "quality", QUALITIES)
    mask_meta = None
    if kind in FRAMES:
        req.image_meta = _meta(h, "image", limits, channels=(3, 4), dtypes=("u8", "u16"))
        if frames is not None:
            check_frame_length(req.image_meta, frames[0])
    if kind in ("edit", "prepare", "learn_concept"):
        mask_meta = _meta(h, "mask", limits, channels=(1,), dtypes=("u8",))
        if (mask_meta.width, mask_meta.height) != (req.image_meta.width, req.image_meta.height):
            raise ProtocolError(
                BAD_REQUEST,
                f"mask is {mask_meta.width}x{mask_meta.height}, image is "
                f"{req.image_meta.width}x{req.image_meta.height}",
            )
        req.mask_meta = mask_meta
        if frames is not None:
            check_frame_length(mask_meta, frames[1])
    if kind == "edit":
        req.op = _choice(h, "op", OPS, required=True)
        req.strength = _choice(h, "strength", STRENGTHS)
        concept = _str(h, "concept", max_len=64)
        units = _units(h, limits.max_units)
        if (concept is None) == (units is None):
            raise ProtocolError(BAD_REQUEST, "edit needs exactly one of 'concept' or 'units'")
        req.concept, req.units = concept, units or []
        if h.get("leave_out") not in (None, []):
            if concept is None:
                raise ProtocolError(BAD_REQUEST, "'leave_out' goes with 'concept', not 'units'")
            req.leave_out = _units(h, limits.max_units, "leave_out") or []
        req.remove_all = _bool(h, "remove_all")
        req.confirm_replaced = _fraction(h, "confirm_replaced")
    elif kind == "learn_concept":
        req.name = _name(h, "name", 64, required=True)
        req.replace = _bool(h, "replace")
    elif kind == "discover":
        spec = DiscoverSpec()
        spec.groups = _int(h, "groups", 1, MAX_GROUPS) or spec.groups
        spec.samples = _int(h, "samples", spec.groups, MAX_SAMPLES) or max(
            spec.samples, spec.groups
        )
        spec.seed = _int(h, "seed", 0, 2**31 - 1) or 0
        spec.prefix = _name(h, "prefix", 60) or spec.prefix
        spec.save, spec.replace, spec.sheet = (_bool(h, k) for k in ("save", "replace", "sheet"))
        req.replace, req.discover = spec.replace, spec
    if frames is None:
        return req
    # Pixels last, once everything else is known good; admit before any copy, so that a
    # refused request costs no memory beyond its frames (freed when the reply is sent).
    if admit is not None:
        admit(sum(len(f) for f in frames))
    if req.image_meta is not None:
        req.image = to_array(req.image_meta, frames[0])
    if mask_meta is not None:
        req.mask = to_array(mask_meta, frames[1])
        if not req.mask.any():
            raise ProtocolError(BAD_REQUEST, "mask is empty: select the region to edit")
    return req


# -- field checks ----------------------------------------------------------------------------
def _missing(key: str) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, f"field {key!r} is required")


def _str(h: dict, key: str, required: bool = False, max_len: int = 256) -> str | None:
    v = h.get(key)
    if v is None:
        if required:
            raise _missing(key)
        return None
    if type(v) is not str:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be a string")
    if not v or len(v) > max_len or not v.isprintable():
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be 1-{max_len} printable characters")
    return v


def _int(h: dict, key: str, lo: int, hi: int, required: bool = False) -> int | None:
    v = h.get(key)
    if v is None:
        if required:
            raise _missing(key)
        return None
    if type(v) is not int:  # bool is an int subclass: excluded on purpose
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be an integer")
    if not lo <= v <= hi:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be in {lo}..{hi}, got {v}")
    return v


def _fraction(h: dict, key: str) -> float | None:
    v = h.get(key)
    if v is None:
        return None
    if type(v) not in (int, float) or not 0 <= v <= 1:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be a number in 0..1")
    return float(v)


def _bool(h: dict, key: str) -> bool:
    v = h.get(key, False)
    if type(v) is not bool:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be true or false")
    return v


def _name(h: dict, key: str, max_len: int, required: bool = False) -> str | None:
    v = _str(h, key, required, max_len=max_len)
    if v is not None and (not NAME_RE.match(v) or v != v.strip()):
        raise ProtocolError(
            BAD_REQUEST,
            f"field {key!r} must be 1-{max_len} letters, digits, spaces, '_', '-' or '.', "
            "starting with a letter, digit or '_'",
        )
    return v


def _choice(h: dict, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
    v = _str(h, key, required, max_len=32)
    if v is not None and v not in choices:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be one of {', '.join(choices)}")
    return v


def _model(h: dict, models: set[str]) -> str | None:
    model = _str(h, "model", max_len=128)
    if model is not None and model not in models:
        raise ProtocolError(
            UNKNOWN_MODEL, f"unknown model {model!r}; known: {', '.join(sorted(models))}"
        )
    return model


def _units(h: dict, max_units: int, key: str = "units") -> list[int] | None:
    v = h.get(key)
    if v is None:
        return None
    if type(v) is not list or not v or len(v) > max_units:
        raise ProtocolError(
            BAD_REQUEST, f"field {key!r} must be a list of 1-{max_units} unit indices"
        )
    if any(type(u) is not int or not 0 <= u < MAX_UNIT for u in v):
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must hold integers in 0..{MAX_UNIT - 1}")
    if len(set(v)) != len(v):
        raise ProtocolError(BAD_REQUEST, f"field {key!r} lists a unit twice")
    return list(v)


def _meta(
    h: dict, key: str, limits: Limits, channels: tuple[int, ...], dtypes: tuple[str, ...]
) -> ImageMeta:
    m = h.get(key)
    if m is None:
        raise _missing(key)
    if type(m) is not dict:
        raise ProtocolError(BAD_REQUEST, f"field {key!r} must be a map")
    w = _int(m, "width", 1, 2**31, required=True)
    ht = _int(m, "height", 1, 2**31, required=True)
    c = _int(m, "channels", 1, 64, required=True)
    dtype = _str(m, "dtype", required=True, max_len=8)
    if c not in channels:
        raise ProtocolError(
            BAD_REQUEST, f"{key} must have {' or '.join(map(str, channels))} channel(s), got {c}"
        )
    if dtype not in dtypes or dtype not in DTYPES:
        raise ProtocolError(BAD_REQUEST, f"{key} dtype must be {' or '.join(dtypes)}")
    if max(w, ht) > limits.max_side:
        raise ProtocolError(
            TOO_LARGE, f"{key} is {w}x{ht}; the server takes sides up to {limits.max_side} px"
        )
    if w * ht > limits.max_pixels:
        raise ProtocolError(
            TOO_LARGE,
            f"{key} has {w * ht} pixels; the server takes up to {limits.max_pixels}",
        )
    return ImageMeta(w, ht, c, dtype)


def check_frame_length(meta: ImageMeta, frame: bytes) -> None:
    if len(frame) != meta.nbytes:
        raise ProtocolError(
            BAD_REQUEST,
            f"pixel frame has {len(frame)} bytes; {meta.describe()} needs {meta.nbytes}",
        )
