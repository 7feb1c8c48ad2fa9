"""Server parts without sockets: request checks, pixel conversion, the session LRU, binds."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.images import ImageMeta, from_array, to_array
from ganpaint.server.protocol import ProtocolError, pack, unpack_header
from ganpaint.server.requests import JobRequest, parse_request
from ganpaint.server.security import BindRefused, check_bind, curve_files, is_loopback, make_keys
from ganpaint.server.sessions import SessionCache

MODELS = {"digiface-dcgan64"}
LIMITS = Limits(max_side=100, max_pixels=5000)


def edit_msg(w=8, h=6, **over):
    """A valid edit request (header, frames), with header fields overridden."""
    img = np.arange(w * h * 4, dtype=np.uint8).reshape(h, w, 4)
    mask = np.zeros((h, w), np.uint8)
    mask[1:3, 2:5] = 255
    header = {
        "v": 1,
        "kind": "edit",
        "id": "r1",
        "op": "remove",
        "units": [1, 2],
        "image": {"width": w, "height": h, "channels": 4, "dtype": "u8"},
        "mask": {"width": w, "height": h, "channels": 1, "dtype": "u8"},
    }
    header.update(over)
    return {k: v for k, v in header.items() if v is not None}, [img.tobytes(), mask.tobytes()]


def parse(header, frames=()):
    return parse_request(list(frames), header, LIMITS, MODELS)


def code_of(header, frames=()) -> str:
    with pytest.raises(ProtocolError) as e:
        parse(header, frames)
    assert e.value.message and "\n" not in e.value.message
    return e.value.code


def test_valid_edit_is_parsed_into_arrays():
    header, frames = edit_msg()
    req = parse(header, frames)
    assert isinstance(req, JobRequest)
    assert req.image.shape == (6, 8, 4) and req.image.dtype == np.uint8
    assert req.mask.shape == (6, 8) and req.units == [1, 2]
    assert req.strength is None and req.leave_out == []  # None: the concept's default


def test_leave_out_goes_with_a_concept():
    header, frames = edit_msg(units=None, concept="tree", leave_out=[418], strength="high")
    req = parse(header, frames)
    assert req.concept == "tree" and req.leave_out == [418] and req.strength == "high"
    header, frames = edit_msg(units=None, concept="tree", leave_out=[])
    assert parse(header, frames).leave_out == []
    for bad in ([418, 418], ["418"], 418, [-1]):
        header, frames = edit_msg(units=None, concept="tree", leave_out=bad)
        assert code_of(header, frames) == "bad_request"
    header, frames = edit_msg(leave_out=[418])  # with units: refused
    assert code_of(header, frames) == "bad_request"


@pytest.mark.parametrize(
    "over",
    [
        {"v": 3},
        {"v": None},
        {"v": "1"},
        {"kind": "explode"},
        {"kind": 5},
        {"id": 7},
        {"id": "x" * 65},
        {"op": "paint"},
        {"op": None},
        {"units": []},
        {"units": [1, 1]},
        {"units": [-1]},
        {"units": [True]},
        {"units": ["3"]},
        {"units": 3},
        {"units": None},  # neither concept nor units
        {"concept": "tree"},  # both
        {"steps": 0},
        {"steps": 1.5},
        {"steps": True},
        {"steps": "20"},
        {"strength": "max"},
        {"image": {"width": 8, "height": 6, "channels": 2, "dtype": "u8"}},
        {"image": {"width": 8, "height": 6, "channels": 4, "dtype": "f32"}},
        {"image": {"width": -8, "height": 6, "channels": 4, "dtype": "u8"}},
        {"image": {"width": 8, "height": 6, "channels": 4}},
        {"image": [8, 6, 4, "u8"]},
        {"mask": {"width": 8, "height": 5, "channels": 1, "dtype": "u8"}},
        {"mask": {"width": 8, "height": 6, "channels": 1, "dtype": "u16"}},
    ],
)
def test_bad_fields_are_bad_requests(over):
    header, frames = edit_msg(**over)
    assert code_of(header, frames) == "bad_request"


def test_frames_must_match_the_header():
    header, (img, mask) = edit_msg()
    assert code_of(header, [img]) == "bad_request"  # truncated multipart
    assert code_of(header, [img, mask, b"x"]) == "bad_request"
    assert code_of(header, [img[:-1], mask]) == "bad_request"
    assert code_of(header, [img, mask + b"\0"]) == "bad_request"
    assert code_of({"v": 1, "kind": "hello"}, [b"x"]) == "bad_request"


def test_empty_mask_is_refused_before_any_work():
    header, (img, mask) = edit_msg()
    assert code_of(header, [img, bytes(len(mask))]) == "bad_request"


def test_limits_and_models():
    header, frames = edit_msg(w=101, h=1)
    assert code_of(header, frames) == "too_large"
    header, frames = edit_msg(w=80, h=70)  # sides fine, 5600 pixels > 5000
    assert code_of(header, frames) == "too_large"
    header, frames = edit_msg(model="stylegan9")
    assert code_of(header, frames) == "unknown_model"
    assert code_of({"v": 1, "kind": "concepts", "model": "nope"}) == "unknown_model"


def test_hello_answers_any_version_and_simple_kinds_parse():
    assert parse({"kind": "hello", "v": 99}).kind == "hello"
    assert parse({"v": 1, "kind": "cancel", "job": "j-1"}).job == "j-1"
    assert code_of({"v": 1, "kind": "cancel"}) == "bad_request"
    assert code_of({"v": 1, "kind": "heartbeat", "job": 3}) == "bad_request"


def test_headers_must_be_msgpack_maps():
    for raw in [b"", b"\xc1", b"\x91\x01", msgpack.packb([1, 2]), b"\x81\x01\x02", b"\x80" * 70000]:
        with pytest.raises(ProtocolError):
            unpack_header(raw)
    assert unpack_header(pack({"kind": "hello"})) == {"kind": "hello"}


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint8, 4), (np.uint16, 3)])
def test_pixels_round_trip(dtype, channels):
    arr = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (5, 7, channels), dtype=dtype)
    meta, data = from_array(arr)
    assert meta == ImageMeta(7, 5, channels, "u8" if dtype == np.uint8 else "u16")
    assert np.array_equal(to_array(meta, data), arr)


def test_u16_is_little_endian_on_the_wire():
    arr = np.array([[[1, 2, 258]]], dtype=np.uint16)
    _, data = from_array(arr)
    assert data == b"\x01\x00\x02\x00\x02\x01"


class Sized:
    def __init__(self, n: int):
        self.n = n

    def nbytes(self) -> int:
        return self.n


def test_session_cache_evicts_least_recently_used_within_budget():
    cache = SessionCache(100)
    cache["a"], cache["b"] = Sized(40), Sized(40)
    assert cache.get("a") is not None  # a is now the most recent
    cache["c"] = Sized(40)
    assert set(cache) == {"a", "c"}
    cache["a"].n = 90  # sessions grow after they are stored (the fit is attached)
    assert cache.trim() == 1 and set(cache) == {"a"}
    assert cache.stats()["bytes"] == 90
    cache["huge"] = Sized(1000)
    assert "huge" not in cache


def test_loopback_detection():
    for ok in [
        "tcp://127.0.0.1:5570",
        "tcp://localhost:1",
        "tcp://[::1]:5",
        "tcp://127.3.2.1:*",
        "ipc:///tmp/x",
        "inproc://a",
    ]:
        assert is_loopback(ok), ok
    for bad in [
        "tcp://0.0.0.0:5570",
        "tcp://*:5570",
        "tcp://192.168.1.2:5570",
        "tcp://eth0:1",
        "tcp://example.org:1",
        "udp://127.0.0.1:1",
        "garbage",
        "tcp://10.0.0.1;127.0.0.1:5",
    ]:
        assert not is_loopback(bad), bad


def test_remote_bind_needs_consent_and_keys(tmp_path: Path):
    with pytest.raises(BindRefused, match="--allow-remote"):
        check_bind(ServerConfig(bind="tcp://0.0.0.0:5570"))
    with pytest.raises(BindRefused, match="without encryption"):
        check_bind(ServerConfig(bind="tcp://0.0.0.0:5570", allow_remote=True))
    make_keys(tmp_path)
    check_bind(
        ServerConfig(bind="tcp://0.0.0.0:5570", allow_remote=True, curve=curve_files(tmp_path))
    )
    check_bind(ServerConfig(bind="tcp://127.0.0.1:5570"))


def test_remove_all_is_an_optional_bool():
    header, frames = edit_msg(units=None, concept="open mouth")
    assert parse(header, frames).remove_all is False  # default: only where it is present
    header, frames = edit_msg(units=None, concept="open mouth", remove_all=True)
    assert parse(header, frames).remove_all is True
    for bad in (1, "yes", 0):
        header, frames = edit_msg(units=None, concept="open mouth", remove_all=bad)
        assert code_of(header, frames) == "bad_request"


def test_confirm_replaced_is_an_optional_share():
    header, frames = edit_msg()
    assert parse(header, frames).confirm_replaced is None  # default: never ask
    header, frames = edit_msg(confirm_replaced=0.5)
    assert parse(header, frames).confirm_replaced == 0.5
    for bad in (-0.1, 1.5, "half", True):
        header, frames = edit_msg(confirm_replaced=bad)
        assert code_of(header, frames) == "bad_request"
