"""Client for the GANPaint edit server (protocol: docs/protocol.md).

One self-contained file (standard library + pyzmq + msgpack; no torch, numpy or ganpaint
imports): the GIMP plug-in copies it next to itself as ``ganpaint_client.py``.

    client = Client("tcp://127.0.0.1:5570")
    result = client.edit(image, mask, op="remove", concept="glasses", progress=print)
    client.close()

Requests are retried the "lazy pirate" way: when no reply comes within ``timeout_s`` the
DEALER socket is closed and reopened and the request sent again (the server recognises a
repeated request id, so a job never runs twice). Every socket of one Client carries the
same random routing id: the server gives a job's replies only to the connection that
submitted it, and a reopened socket is that connection again. While a job runs the client sends a
heartbeat every second; a server that hears nothing for a while cancels the job. A Client
is not thread-safe: use it from one thread.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zmq

PROTOCOL_VERSION = 2
HEADER_ROOM = 64 * 1024  # of a message's size limit, what a header may take
DEFAULT_ADDRESS = "tcp://127.0.0.1:5570"
POLL_S = 0.1  # how often should_cancel is polled while a job runs
REFUSED_RETRY_S = 0.5  # a server at its connection cap is asked again this often
# What a refused handshake means (the server's ZAP status, server/connections.py).
FULL = "full"
KEY_REFUSED = "key"
BYTES_PER_SAMPLE = {"u8": 1, "u16": 2}

ProgressFn = Callable[[dict], None]
ShouldCancel = Callable[[], bool]


class ServerError(Exception):
    """An error reply or a failure to reach the server.

    code: bad_request, too_large, unknown_model, unknown_concept, would_replace, cancelled,
    busy, internal (sent by the server) or unavailable, timeout (decided here).
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerUnavailable(ServerError):
    """Nothing answers at the address."""

    def __init__(self, message: str):
        super().__init__("unavailable", message)


class Cancelled(ServerError):
    """The job was cancelled (by should_cancel, another client, or the server)."""

    def __init__(self, message: str = "cancelled"):
        super().__init__("cancelled", message)


@dataclass
class RawImage:
    """Pixels row-major with interleaved channels; 16-bit samples little-endian."""

    data: bytes
    width: int
    height: int
    channels: int
    dtype: str  # "u8" | "u16"

    def meta(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype,
        }

    def expected_bytes(self) -> int:
        return self.width * self.height * self.channels * BYTES_PER_SAMPLE.get(self.dtype, 0)


@dataclass
class CurveKeys:
    """Keys for a server that listens beyond loopback (CURVE; see `ganpaint serve
    --make-keys`)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_public_file: str | Path, client_secret_file: str | Path):
        import zmq.auth

        mode = os.stat(client_secret_file).st_mode & 0o777
        if mode & 0o077:  # whoever reads it can be this client (ssh refuses such keys too)
            raise ValueError(
                f"the secret key {client_secret_file} can be read or changed by other users "
                f"(mode {mode:04o}); run `chmod 600 {client_secret_file}`"
            )
        server_public, _ = zmq.auth.load_certificate(server_public_file)
        public, secret = zmq.auth.load_certificate(client_secret_file)
        if not secret:
            raise ValueError(f"{client_secret_file} holds no secret key")
        return cls(server_public, public, secret)


# The secret session name of this process's clients (docs/protocol.md §6.5): the clients of
# one process (the plug-in's dialog prepares in one and edits in another) share the server's
# cached sessions; other processes do not see them.
PROCESS_SESSION = secrets.token_hex(16)


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout_s: float = 10.0,
        retries: int = 3,
        *,
        curve: CurveKeys | None = None,
        session: str = PROCESS_SESSION,
    ):
        self.address = address
        self.timeout_s = float(timeout_s)
        self.retries = max(1, int(retries))  # attempts in all, the first included
        self.curve = curve
        self.session = session
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        # A secret: whoever presents it is this client to the server (libzmq reserves ids
        # that start with a zero byte for the ones it makes up itself).
        self._routing_id = b"gp" + secrets.token_bytes(16)
        self._heard = False  # has the server ever answered this client?
        self._monitor: zmq.Socket | None = None  # the socket's handshake failures
        # FULL or KEY_REFUSED: the current socket's handshake was refused; _refusal keeps
        # the latest reason until the server answers again (for the final error).
        self._refused: str | None = None
        self._refusal: str | None = None
        self._limits: dict | None = None

    # -- quick requests ----------------------------------------------------------------------
    def hello(self) -> dict:
        """{"server_version", "protocol", "device", "models": [...], "limits": {...}, ...}"""
        info = self._call("hello")
        if isinstance(info.get("limits"), dict):
            self._limits = info["limits"]
        return info

    def models(self) -> list[dict]:
        """[{"id", "resolution", "family", "source", "loaded"}, ...]"""
        return list(self._call("models").get("models", []))

    def concepts(self, model: str | None = None, all: bool = False) -> list[dict]:
        """[{"name", "source", "units": [...], "ops": [...], ...}, ...] for a model (default:
        the server's); ``all``: the unnamed (hidden) ones too."""
        reply = self._call("concepts", **_given(model=model, all=all or None))
        return list(reply.get("concepts", []))

    def status(self) -> dict:
        """{"running": job or None, "queued": [...], "jobs": [...], "sessions": {...}, ...};
        other clients' jobs have "mine": False and an opaque label for "job"."""
        return self._call("status")

    def cancel(self, job_id: str) -> dict:
        """{"job", "state"}: state is "cancelled" (was waiting), "cancelling" (stops within
        one step), "finished" or "unknown"."""
        return self._call("cancel", job=job_id)

    # -- jobs --------------------------------------------------------------------------------
    def reconstruct(
        self,
        image: RawImage,
        *,
        model: str | None = None,
        steps: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: ShouldCancel | None = None,
        quality: str | None = None,
    ) -> dict:
        """Fit G′ to the whole image and render it (tests the fit)."""
        self._check_image(image, "image", (3, 4), ("u8", "u16"))
        self._check_limits(image)
        fields = {"image": image.meta(), **_given(model=model, steps=steps, quality=quality)}
        return self._job("reconstruct", fields, [image.data], progress, should_cancel)

    def edit(
        self,
        image: RawImage,
        mask: RawImage,
        *,
        op: str,
        concept: str | None = None,
        units: list[int] | None = None,
        strength: str | None = None,
        model: str | None = None,
        steps: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: ShouldCancel | None = None,
        quality: str | None = None,
        leave_out: list[int] | None = None,
        remove_all: bool = False,
        confirm_replaced: float | None = None,
    ) -> dict:
        """Add or remove a concept (by name, or as unit indices) inside the mask.

        strength None: the concept's default (else "high", the GANPaint demo's default);
        leave_out: ranked units of the concept to skip (our option, e.g. [418]);
        remove_all: a remove switches the units off in every selected cell, also where the
        concept's presence probe finds none of it (the published method);
        confirm_replaced: raise ServerError "would_replace" (before the fit, seconds in)
        when the edit would draw more than this share of a large selection anew.

        Returns {"image": RawImage like the input, "psnr_keep", "seconds", "session_reused",
        "model", "steps", "job", ...}; pixels where mask == 0 come back unchanged.
        """
        self._check_selection_job(image, mask)
        fields = {
            "image": image.meta(),
            "mask": mask.meta(),
            "op": op,
            **_given(model=model, steps=steps, concept=concept, quality=quality, strength=strength),
        }
        if leave_out:
            fields["leave_out"] = [int(u) for u in leave_out]
        if remove_all:
            fields["remove_all"] = True
        if confirm_replaced is not None:
            fields["confirm_replaced"] = float(confirm_replaced)
        if units is not None:
            fields["units"] = [int(u) for u in units]
        return self._job("edit", fields, [image.data, mask.data], progress, should_cancel)

    def prepare(
        self,
        image: RawImage,
        mask: RawImage,
        *,
        model: str | None = None,
        quality: str | None = None,
        progress: ProgressFn | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> dict:
        """Invert the selection's region ahead of an edit of the same image and mask (e.g.
        while a dialog is open), so that the edit starts from the inversion (within the
        budget of ``quality``; a faithful edit refines a fast one's):
        {"psnr_inversion", "session_reused", "steps", "seconds", "model", "job"}."""
        self._check_selection_job(image, mask)
        fields = {
            "image": image.meta(),
            "mask": mask.meta(),
            **_given(model=model, quality=quality),
        }
        return self._job("prepare", fields, [image.data, mask.data], progress, should_cancel)

    def learn_concept(
        self,
        image: RawImage,
        mask: RawImage,
        *,
        name: str,
        model: str | None = None,
        replace: bool = False,
        progress: ProgressFn | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> dict:
        """Learn a named concept from the selected region and save it on the server:
        {"name", "units", "values", "layer", "source", "model", "job", ...}. A name that
        exists already is refused (bad_request) unless ``replace``."""
        self._check_selection_job(image, mask)
        fields = {"image": image.meta(), "mask": mask.meta(), "name": name, **_given(model=model)}
        if replace:
            fields["replace"] = True
        return self._job("learn_concept", fields, [image.data, mask.data], progress, should_cancel)

    def discover(
        self,
        *,
        groups: int | None = None,
        samples: int | None = None,
        seed: int | None = None,
        prefix: str | None = None,
        save: bool = False,
        replace: bool = False,
        sheet: bool = False,
        model: str | None = None,
        progress: ProgressFn | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> dict:
        """Group the model's units into unnamed concepts ("<prefix>-01", ...):
        {"concepts": [...], "saved": bool, "job", ...}, plus "image" (a contact sheet, RGB
        u8 RawImage) when ``sheet``."""
        fields = _given(model=model, groups=groups, samples=samples, seed=seed, prefix=prefix)
        fields.update(
            {k: True for k, v in (("save", save), ("replace", replace), ("sheet", sheet)) if v}
        )
        return self._job("discover", fields, [], progress, should_cancel)

    def close(self) -> None:
        self._reopen()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._ctx is None:
            raise ServerError("bad_request", "this client is closed")
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.ROUTING_ID, self._routing_id)
            if self.curve is not None:
                sock.curve_serverkey = self.curve.server_public
                sock.curve_publickey = self.curve.public
                sock.curve_secretkey = self.curve.secret
            # A server at its connection cap refuses the handshake; only the socket's
            # monitor hears of it (otherwise it looks like a server that does not answer).
            self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            sock.connect(self.address)
            self._sock = sock
        return self._sock

    def _reopen(self) -> None:
        """Lazy pirate: a socket that missed a reply may be wedged; start afresh."""
        if self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = self._monitor = None
        self._refused = None

    def _check_refused(self) -> bool:
        """Did the server refuse this socket's handshake? Sets ``_refused``."""
        from zmq.utils.monitor import recv_monitor_message

        mon = self._monitor
        while mon is not None and mon.poll(0):
            ev = recv_monitor_message(mon)
            if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                # The server's ZAP status: 500 at its connection cap, 400 an unknown key.
                self._refused = FULL if ev["value"] == 500 else KEY_REFUSED
        self._refusal = self._refused or self._refusal
        return self._refused is not None

    def _send(self, header: dict, frames: list = ()) -> None:
        header = {"v": PROTOCOL_VERSION, **header}
        parts = [msgpack.packb(header, use_bin_type=True), *frames]
        try:
            self._socket().send_multipart(parts, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # the pipe is full or not connected yet: the timeout and retry cover it

    def _recv(self, request_id: str, wait_s: float) -> tuple[dict, list[bytes]] | None:
        """The next message for request_id within wait_s, or None. Others are dropped."""
        deadline = time.monotonic() + wait_s
        sock = self._socket()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if self._monitor in ready and self._check_refused():
                return None  # refused: the caller decides whether to knock again
            if sock not in ready:
                continue
            parts = sock.recv_multipart()
            try:
                header = msgpack.unpackb(parts[0], raw=False)
            except Exception:
                continue
            if not isinstance(header, dict):
                continue
            self._heard = True
            self._refusal = None
            if header.get("id") == request_id:
                return header, parts[1:]

    def _no_answer(self) -> ServerError:
        waited = f"{self.timeout_s:g} s × {self.retries}"
        if self._refusal == FULL:
            return ServerError(
                "busy",
                f"the server at {self.address} is serving as many clients as it allows at "
                f"once (its --max-connections); waited {waited}; try again when another "
                "client has finished",
            )
        if self._refusal == KEY_REFUSED:
            why = "this client's CURVE key (not among its authorised clients)"
            return ServerUnavailable(
                f"the server at {self.address} refused {why if self.curve else 'the connection'}"
            )
        if not self._heard:
            return ServerUnavailable(f"nothing answers at {self.address} (waited {waited})")
        return ServerError("timeout", f"the server at {self.address} stopped answering ({waited})")

    def _call(self, kind: str, **fields) -> dict:
        request_id = uuid.uuid4().hex
        # A refused connection does not count as an attempt: it is asked again every
        # REFUSED_RETRY_S until the whole wait (timeout × retries) is spent.
        deadline = time.monotonic() + self.timeout_s * self.retries
        attempt = 0
        while True:
            self._send({"kind": kind, "id": request_id, **fields})
            reply = self._recv(request_id, self.timeout_s)
            if reply is not None:
                header = reply[0]
                if header.get("kind") == "error":
                    raise _error(header)
                return _public(header)
            if self._refused == FULL and time.monotonic() < deadline:
                time.sleep(REFUSED_RETRY_S)
            else:
                attempt += 1
                if attempt >= self.retries or self._refused == KEY_REFUSED:
                    break
            self._reopen()
        self._reopen()
        raise self._no_answer()

    def _check_image(self, img: RawImage, what: str, channels: tuple, dtypes: tuple) -> None:
        if img.channels not in channels or img.dtype not in dtypes:
            raise ServerError(
                "bad_request",
                f"{what} must have {' or '.join(map(str, channels))} channel(s) of "
                f"{' or '.join(dtypes)}, got {img.channels} of {img.dtype}",
            )
        if img.width < 1 or img.height < 1:
            raise ServerError("bad_request", f"{what} is empty")
        size = memoryview(img.data).nbytes
        if size != img.expected_bytes():
            raise ServerError(
                "bad_request",
                f"{what} data has {size} bytes; {img.width}x{img.height}x{img.channels} "
                f"{img.dtype} needs {img.expected_bytes()}",
            )

    def _check_selection_job(self, image: RawImage, mask: RawImage) -> None:
        """An image and its selection, as edit, prepare and learn_concept send them."""
        self._check_image(image, "image", (3, 4), ("u8", "u16"))
        self._check_image(mask, "mask", (1,), ("u8",))
        _same_size(image, mask)
        self._check_limits(image)

    def _needs_upload(self, frames: list) -> bool:
        """Whether the pixels are too large for one message (hello's limits say)."""
        lim = self._limits or {}
        most = lim.get("max_message_bytes")
        return isinstance(most, int) and any(len(f) > most - HEADER_ROOM for f in frames)

    def _check_limits(self, img: RawImage, what: str = "image") -> None:
        """Refuse here what the server would refuse (or drop the connection for)."""
        if self._limits is None:
            self.hello()
        lim = self._limits or {}
        side, pixels = lim.get("max_side"), lim.get("max_pixels")
        if isinstance(side, int) and max(img.width, img.height) > side:
            raise ServerError(
                "too_large",
                f"{what} is {img.width}x{img.height}; the server takes sides up to {side} px",
            )
        if isinstance(pixels, int) and img.width * img.height > pixels:
            raise ServerError(
                "too_large",
                f"{what} has {img.width * img.height} pixels; the server takes up to {pixels}",
            )

    def _job(
        self,
        kind: str,
        fields: dict,
        frames: list,
        progress: ProgressFn | None,
        should_cancel: ShouldCancel | None,
    ) -> dict:
        """Submit, then relay progress and send heartbeats until the final reply."""
        return _JobRun(self, kind, fields, frames, progress, should_cancel).run()


class _JobRun:
    """One job's exchange with the server: submit, relay progress, send heartbeats, cancel
    when asked, and knock again on a silent or full server, until the final reply."""

    def __init__(
        self,
        client: Client,
        kind: str,
        fields: dict,
        frames: list,
        progress: ProgressFn | None,
        should_cancel: ShouldCancel | None,
    ):
        self.client, self.frames = client, frames
        self.progress, self.should_cancel = progress, should_cancel
        self.rid = uuid.uuid4().hex
        self.request = {"kind": kind, "id": self.rid, "session": client.session, **fields}
        # Pixels larger than one message go as an upload, chunk by chunk under the server's
        # credit (docs/protocol.md §3a); smaller ones in the request itself.
        self.chunked = Chunked(frames) if client._needs_upload(frames) else None
        if self.chunked is not None:
            self.request["upload"] = True
        self.job: str | None = None  # the server's id, once it accepted
        self.heartbeat_s = 1.0
        self.position = None  # in the queue, as last heard
        self.want_cancel = False
        self.cancel_deadline: float | None = None
        self.failures = 0  # silent timeouts in a row
        self.refused_since: float | None = None  # when the server started refusing to connect
        self.last_heard = self.last_beat = 0.0

    def run(self) -> dict:
        self.submit()
        self.last_heard = self.last_beat = time.monotonic()
        try:
            while True:
                self.check_cancel()
                got = self.client._recv(self.rid, POLL_S)
                now = time.monotonic()
                if self.client._refused == FULL:
                    self.knock(now)
                    continue
                if got is not None:
                    result = self.on_reply(now, *got)
                    if result is not None:
                        return result
                self.keep_alive(now)
        except BaseException as e:
            # Leaving early (timeout, a failing callback, KeyboardInterrupt): do not leave
            # the job running for nobody.
            if self.job is not None and not (isinstance(e, ServerError) and e.code != "timeout"):
                self.send("cancel")
            raise

    def send(self, kind: str) -> None:
        self.client._send({"kind": kind, "id": self.rid, "job": self.job})

    def submit(self) -> None:
        self.client._send(self.request, [] if self.chunked is not None else self.frames)

    def resubmit(self, now: float) -> None:
        """After reopening the socket: the request again before the server took it (it drops
        a duplicate), else a heartbeat (the same routing id: it answers the new socket)."""
        if self.job is None:
            self.submit()
        else:
            self.send("heartbeat")
        self.last_heard = self.last_beat = now

    def check_cancel(self) -> None:
        if not self.want_cancel and self.should_cancel is not None and self.should_cancel():
            self.want_cancel = True
        if self.want_cancel and self.job is not None and self.cancel_deadline is None:
            self.send("cancel")
            self.cancel_deadline = time.monotonic() + self.client.timeout_s

    def knock(self, now: float) -> None:
        """The server is at its connection cap: say so, knock again now and then, and give up
        after the whole wait (timeout × retries)."""
        if self.refused_since is None:
            self.refused_since = now
            _report(self.progress, _waiting(self.job))
        if self.job is None and self.want_cancel:
            raise Cancelled("cancelled before the server took the job")
        if now - self.refused_since > self.client.timeout_s * self.client.retries:
            raise self.client._no_answer()
        if now - self.last_heard >= REFUSED_RETRY_S:
            self.client._reopen()
            self.resubmit(now)

    def on_reply(self, now: float, header: dict, parts: list) -> dict | None:
        """Act on one reply; the job's result when it is the final one."""
        self.last_heard, self.failures, self.refused_since = now, 0, None
        what = header.get("kind")
        if what in ("upload", "credit") and self.chunked is not None:
            for index, data in self.chunked.granted(header):
                msg = {"kind": "chunk", "id": self.rid, "upload": self.chunked.id, "index": index}
                self.client._send(msg, [data])
        elif what == "accepted":
            self.job = str(header.get("job"))
            self.heartbeat_s = float(header.get("heartbeat_s") or 1.0)
            self.position = header.get("position")
            _report(self.progress, _queued(self.job, self.position))
        elif what == "heartbeat":
            if header.get("state") == "queued" and header.get("position") != self.position:
                self.position = header.get("position")
                _report(self.progress, _queued(self.job, self.position))
        elif what == "progress":
            _report(self.progress, _progress(header))
        elif what == "result":
            if self.want_cancel:
                raise Cancelled("cancelled (the job had just finished)")
            return _result(header, parts)
        elif what == "error":
            raise _error(header)
        return None

    def keep_alive(self, now: float) -> None:
        """Heartbeats while the job runs; a silent server is asked again, then given up."""
        if self.cancel_deadline is not None and now > self.cancel_deadline:
            raise Cancelled("cancelled (the server did not confirm in time)")
        if self.job is not None and now - self.last_beat >= self.heartbeat_s:
            self.send("heartbeat")
            self.last_beat = now
        if now - self.last_heard > self.client.timeout_s:
            self.failures += 1
            if self.failures >= self.client.retries:
                raise self.client._no_answer()
            self.client._reopen()
            self.resubmit(now)


class Chunked:
    """An upload's pixels, cut into the server's chunks and sent as its credit allows."""

    def __init__(self, frames: list):
        self.frames = [memoryview(f).cast("B") for f in frames]
        self.total = sum(len(f) for f in self.frames)
        self.id: str | None = None
        self.chunk_bytes = 1
        self.sent = 0  # chunks sent (every index below)

    def granted(self, header: dict) -> list[tuple[int, bytes]]:
        """The chunks an `upload` or `credit` reply lets the client send now."""
        if header.get("kind") == "upload":  # the start, or the server's state after a resend
            self.id = str(header.get("upload"))
            self.chunk_bytes = max(1, int(header.get("chunk_bytes") or 1))
            self.sent = int(header.get("next") or 0)
        elif header.get("upload") != self.id:
            return []
        credit = int(header.get("credit") or 0)
        out = []
        while self.sent < credit:
            out.append((self.sent, self.chunk(self.sent)))
            self.sent += 1
        return out

    def chunk(self, index: int) -> bytes:
        start, end = index * self.chunk_bytes, min((index + 1) * self.chunk_bytes, self.total)
        parts, at = [], 0
        for f in self.frames:
            lo, hi = max(start, at), min(end, at + len(f))
            if lo < hi:
                parts.append(f[lo - at : hi - at])
            at += len(f)
        return b"".join(parts)


# -- messages -> results ---------------------------------------------------------------------
PROTOCOL_FIELDS = ("v", "kind", "id")


def _same_size(image: RawImage, mask: RawImage) -> None:
    if (mask.width, mask.height) != (image.width, image.height):
        raise ServerError(
            "bad_request",
            f"mask is {mask.width}x{mask.height}, image is {image.width}x{image.height}",
        )


def _given(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def _public(header: dict) -> dict:
    return {k: v for k, v in header.items() if k not in PROTOCOL_FIELDS}


def _error(header: dict) -> ServerError:
    err = header.get("error") if isinstance(header.get("error"), dict) else {}
    code = str(err.get("code") or "internal")
    message = str(err.get("message") or "the server reported an error")
    if code == "cancelled":
        return Cancelled(message)
    return ServerError(code, message)


def _report(progress: ProgressFn | None, info: dict) -> None:
    if progress is not None:
        progress(info)


def _queued(job: str | None, position) -> dict:
    return {
        "stage": "queued",
        "step": 0,
        "total": 0,
        "psnr_keep": None,
        "eta_s": None,
        "job": job,
        "position": position,
    }


def _waiting(job: str | None) -> dict:
    return {**_queued(job, None), "stage": "connecting"}


def _progress(header: dict) -> dict:
    info = {k: header.get(k) for k in ("stage", "step", "total", "psnr_keep", "eta_s")}
    info["job"] = header.get("job")
    return info


def _result(header: dict, parts: list[bytes]) -> dict:
    result = _public(header)
    meta = header.get("image")
    if isinstance(meta, dict):
        if not parts:
            raise ServerError("internal", "the result names an image but carries no pixels")
        image = RawImage(
            parts[0],
            int(meta["width"]),
            int(meta["height"]),
            int(meta["channels"]),
            str(meta["dtype"]),
        )
        if len(image.data) != image.expected_bytes():
            raise ServerError("internal", "the result image has the wrong number of bytes")
        result["image"] = image
    return result
