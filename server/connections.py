"""At most N client connections at once: a ZAP handler that refuses handshakes past the cap.

Why: libzmq allocates each incoming message whole as soon as its size is known, so C
connections sending maximum-size requests at once cost C × 144 MiB inside libzmq before the
server reads a byte, and no socket option bounds that. A connection that has not completed
its handshake sends no message data, so refusing the handshake bounds it.

How: the ROUTER gets a ZAP domain, so libzmq asks the handler (inproc://zeromq.zap.01) about
every handshake, NULL mechanism included. The handler counts live connections from the
socket's monitor and answers "no" past the cap; under CURVE it also checks the client's key
(it replaces zmq.auth's authenticator: a context has one ZAP endpoint). The server's socket
thread runs it, so no locks.

Counting without file descriptors (handshake events carry none): admitted = handshakes that
succeeded − disconnects of admitted connections. A connection that ends during its handshake
reports a HANDSHAKE_FAILED_* event before its DISCONNECTED, so a disconnect is charged to a
failed handshake while such failures are unmatched, else to an admitted connection. libzmq
may report two failures for one connection (refused, then dropped by its peer); the count
then errs high (fewer slots, never more) and is reset whenever no connection is open.

What a refused client sees: its handshake fails at once with ZAP status 500 (400: an
unknown CURVE key), and libzmq does not reconnect that socket: the messages queued on it are
dropped. client.py hears it from its socket's monitor, says the server is full, and opens a
new socket every half second until its timeout.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"ganpaint"
ZAP_VERSION = b"1.0"
# The ZAP status of a handshake refused for the cap. Not 300 ("temporary"): libzmq 4.3.5
# then leaves the connection hanging until its handshake timeout (30 s), measured under NULL
# and CURVE. 400 means a bad key; a client sees the status code (not the text), so the cap
# takes 500, which libzmq also answers with an ERROR at once.
FULL = b"500"
FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
EVENTS = FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
# An approved handshake completes within milliseconds; one that has not after this long
# failed (its peer vanished) and no longer holds a slot.
APPROVAL_TTL_S = 5.0


class ConnectionGate:
    """Create before the ROUTER binds; register ``zap`` and ``monitor`` in the loop's poller
    and call ``on_zap()`` / ``on_monitor()`` when they are readable; ``close()`` before the
    ROUTER closes.

    curve_keys: the authorised clients' public keys (z85); None for a NULL (loopback) socket.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        router: zmq.Socket,
        cap: int,
        curve_keys: set[bytes] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.cap = cap
        self.curve_keys = curve_keys
        self.log = log or (lambda line: None)
        self.zap = ctx.socket(zmq.REP)
        self.zap.linger = 0
        self.zap.bind(ZAP_ENDPOINT)
        router.zap_domain = ZAP_DOMAIN
        self._router = router
        self.monitor = router.get_monitor_socket(EVENTS)
        self.admitted = 0  # connections whose handshake succeeded, not yet disconnected
        self.open = 0  # TCP connections accepted and not yet disconnected
        self.refused = 0  # handshakes refused for the cap (ever)
        self._approved: deque[float] = deque()  # approvals whose handshake is still running
        self._failures = 0  # failed handshakes whose disconnect has not been seen
        self._last_full_log = 0.0

    def live(self) -> int:
        """Connections that hold a slot: admitted plus approved but still handshaking."""
        now = time.monotonic()
        while self._approved and now - self._approved[0] > APPROVAL_TTL_S:
            self._approved.popleft()
        return self.admitted + len(self._approved)

    def stats(self) -> dict:
        return {"live": self.live(), "max": self.cap, "refused": self.refused}

    def on_monitor(self) -> None:
        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._count(ev["event"])

    def _count(self, event: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.open += 1
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.admitted += 1
            if self._approved:
                self._approved.popleft()
        elif event & FAILED:
            self._failures += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.open = max(self.open - 1, 0)
            if self._failures:
                self._failures -= 1
            elif self.admitted:
                self.admitted -= 1
            if self.open == 0:  # nothing open: the exact state, whatever was miscounted
                self.admitted = self._failures = 0
                self._approved.clear()
            self.admitted = min(self.admitted, self.open)

    def on_zap(self) -> None:
        """Answer one ZAP request (always: a REP socket that misses a reply is stuck)."""
        try:
            msg = self.zap.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        request_id = msg[1] if len(msg) > 1 else b""
        status, text, user = b"400", b"internal error", b""
        try:
            self.on_monitor()  # the newest counts, this connection's ACCEPTED included
            status, text, user = self._decide(msg)
        finally:
            self.zap.send_multipart([ZAP_VERSION, request_id, status, text, user, b""])

    def _decide(self, msg: list[bytes]) -> tuple[bytes, bytes, bytes]:
        if len(msg) < 6 or msg[0] != ZAP_VERSION:
            return b"400", b"bad ZAP request", b""
        mechanism, credentials = msg[5], msg[6:]
        user = b""
        if self.curve_keys is not None:
            key = z85.encode(credentials[0]) if mechanism == b"CURVE" and credentials else b""
            if key not in self.curve_keys:
                return b"400", b"unknown key", b""
            user = key  # the User-Id the server reads a message's owner from
        elif mechanism != b"NULL":
            return b"400", b"unexpected mechanism", b""
        if self.live() >= self.cap:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_full_log >= 10.0:
                self._last_full_log = now
                self.log(f"refusing connections: {self.cap} open, the maximum (--max-connections)")
            return FULL, b"too many connections", b""
        self._approved.append(time.monotonic())
        return b"200", b"OK", user

    def close(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        self.zap.close(linger=0)
