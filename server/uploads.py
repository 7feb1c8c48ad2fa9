"""Pixels larger than one message arrive in chunks, under credit (docs/protocol.md §3a).

Why: libzmq allocates each incoming message whole before the server sees it, so the largest
message times the connections is memory no one admitted. With messages of at most
``chunk_bytes`` (plus a header), that is a few MiB per connection, and the pixels themselves
are admitted by bytes: an upload reserves its whole size against the server's byte budget
before the first chunk is asked for, and the client may send only the chunks the server has
granted (``WINDOW`` ahead of what arrived), so a client that stops sending holds its
reservation only until ``Uploads.reap``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from .jobs import Owner
from .protocol import BAD_REQUEST, BUSY, ProtocolError
from .requests import JobRequest

WINDOW = 8  # chunks a client may send ahead of what arrived
MAX_UPLOADS = 64  # open at once (each also reserves its bytes); more get busy


@dataclass
class Upload:
    id: str
    owner: Owner
    request: JobRequest  # parsed without its pixels: the header's checks are done
    header: dict
    raw_header: bytes
    sizes: list[int]  # bytes of each pixel frame, in order
    chunk_bytes: int
    last_seen: float
    buffer: bytearray = field(init=False)
    next: int = 0  # the index of the chunk expected next

    def __post_init__(self) -> None:
        self.buffer = bytearray(sum(self.sizes))

    @property
    def nbytes(self) -> int:
        return len(self.buffer)

    @property
    def chunks(self) -> int:
        return -(-self.nbytes // self.chunk_bytes)

    def credit(self) -> int:
        """Chunks the client may have sent: every index below this."""
        return min(self.next + WINDOW, self.chunks)

    def add(self, index: int, data: bytes | memoryview) -> bool:
        """Store chunk ``index`` (one already stored is ignored: a resend after a
        reconnect); True once every chunk is in."""
        if index < self.next:
            return self.done()
        if index != self.next:
            raise ProtocolError(
                BAD_REQUEST, f"chunk {index} of upload {self.id} came before chunk {self.next}"
            )
        start = index * self.chunk_bytes
        size = min(self.chunk_bytes, self.nbytes - start)
        if len(data) != size:
            raise ProtocolError(
                BAD_REQUEST, f"chunk {index} of upload {self.id} has {len(data)} bytes, not {size}"
            )
        self.buffer[start : start + size] = data
        self.next += 1
        return self.done()

    def done(self) -> bool:
        return self.next >= self.chunks

    def frames(self) -> list[memoryview]:
        """The pixel frames, views of the buffer."""
        view, out, at = memoryview(self.buffer), [], 0
        for size in self.sizes:
            out.append(view[at : at + size])
            at += size
        return out


class Uploads:
    """The open uploads; the socket thread's alone."""

    def __init__(self, chunk_bytes: int):
        self.chunk_bytes = chunk_bytes
        self.open: OrderedDict[str, Upload] = OrderedDict()
        self.by_request: dict[str, str] = {}  # the request's retry key -> upload id

    def nbytes(self) -> int:
        return sum(u.nbytes for u in self.open.values())

    def find(self, retry_key: str) -> Upload | None:
        """The upload the same request (a client's resend) opened, if it is still open."""
        upload_id = self.by_request.get(retry_key) if retry_key else None
        return self.open.get(upload_id) if upload_id else None

    def start(
        self, owner: Owner, req: JobRequest, header: dict, raw: bytes, sizes: list[int], now: float
    ) -> Upload:
        if len(self.open) >= MAX_UPLOADS:
            raise ProtocolError(BUSY, f"{MAX_UPLOADS} uploads are open; retry in a moment")
        upload = Upload(secrets.token_hex(8), owner, req, header, raw, sizes, self.chunk_bytes, now)
        self.open[upload.id] = upload
        if req.retry_key:
            self.by_request[req.retry_key] = upload.id
        return upload

    def get(self, upload_id: str, owner: Owner) -> Upload:
        upload = self.open.get(upload_id)
        if upload is None or upload.owner != owner:  # another client's is as good as none
            raise ProtocolError(
                BAD_REQUEST,
                f"no upload {upload_id!r} of this connection (unknown, finished, expired, or "
                "another client's); send the request again",
            )
        return upload

    def close(self, upload: Upload) -> None:
        self.open.pop(upload.id, None)
        if self.by_request.get(upload.request.retry_key) == upload.id:
            del self.by_request[upload.request.retry_key]

    def reap(self, now: float, timeout_s: float) -> list[Upload]:
        """Close uploads whose client sent nothing for ``timeout_s``; returns them."""
        gone = [u for u in self.open.values() if now - u.last_seen > timeout_s]
        for u in gone:
            self.close(u)
        return gone
