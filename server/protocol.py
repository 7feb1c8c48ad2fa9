"""The wire format shared by the server and docs/protocol.md: versions, error codes, framing.

A message is a ZeroMQ multipart message: frame 0 is a msgpack map (the header), any further
frames are raw pixel buffers that the header describes. The client (client/ganpaint_client.py)
keeps its own copy of these few constants: it must not import this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ganpaint.core import __version__

SERVER_VERSION = __version__
PROTOCOL_VERSION = 2
# Version 1 messages are version 2's without uploads (docs/protocol.md §3a): still answered.
SUPPORTED_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 64 * 1024  # headers hold names and numbers, never pixels

# Stable error codes (docs/protocol.md lists what each means to a client).
BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
UNKNOWN_MODEL = "unknown_model"
UNKNOWN_CONCEPT = "unknown_concept"
CANCELLED = "cancelled"
BUSY = "busy"
INTERNAL = "internal"
WOULD_REPLACE = "would_replace"  # edit with confirm_replaced: it would draw most anew
ERROR_CODES = (BAD_REQUEST, TOO_LARGE, UNKNOWN_MODEL, UNKNOWN_CONCEPT, CANCELLED, BUSY, INTERNAL)


@dataclass
class ProtocolError(Exception):
    """A request that gets an error reply; the message is one line for the user."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def pack(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(frame: bytes | memoryview) -> dict:
    """Frame 0 -> a map with string keys, or ProtocolError(bad_request)."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(BAD_REQUEST, f"header frame over {MAX_HEADER_BYTES} bytes")
    try:
        # Limits stop a small frame from claiming huge containers; strict keys keep maps
        # hashable and JSON-like.
        header = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_HEADER_BYTES,
            max_str_len=MAX_HEADER_BYTES,
            max_array_len=4096,
            max_map_len=256,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(
            BAD_REQUEST, f"header is not valid msgpack ({type(e).__name__})"
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_REQUEST, "header must be a msgpack map")
    return header


def error_header(code: str, message: str, request_id: str = "", job: str | None = None) -> dict:
    header = {
        "v": PROTOCOL_VERSION,
        "kind": "error",
        "id": request_id,
        "error": {"code": code, "message": message},
    }
    if job is not None:
        header["job"] = job
    return header


def reply_header(kind: str, request_id: str = "", **fields) -> dict:
    return {"v": PROTOCOL_VERSION, "kind": kind, "id": request_id, **fields}
