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

Counting: the monitor reports each TCP connection's ACCEPTED and DISCONNECTED events with its
file descriptor, so the set of open descriptors is exact, whatever order events of different
connections come in, except that libzmq closes a connection whose routing id was handed over
to a new one without a DISCONNECTED event. So each descriptor is kept with the inode of its
socket at ACCEPTED, and one that no longer names that socket (closed, or reused) is dropped
whenever the count is read. Every open connection holds a slot, the one whose handshake is being
decided included (its ACCEPTED precedes its ZAP request): a connection that handshakes and
closes at once frees its slot with its DISCONNECTED, and a refused one as soon as libzmq has
closed it (milliseconds). A connection that never completes its handshake is closed by libzmq
after ``HANDSHAKE_S``.

What a refused client sees: its handshake fails at once with ZAP status 500 (400: an
unknown CURVE key), and libzmq does not reconnect that socket: the messages queued on it are
dropped. ganpaint_client.py hears it from its socket's monitor, says the server is full, and opens a
new socket every half second until its timeout.
"""

from __future__ import annotations

import os
import stat
import time
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
EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
# A connection whose ZMTP handshake has not completed after this long is closed by libzmq
# (ZMQ_HANDSHAKE_IVL; libzmq's default is 30 s): a silent TCP connection holds a slot no longer.
HANDSHAKE_S = 5.0


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
        router.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
        self.monitor = router.get_monitor_socket(EVENTS)
        self.open: dict[int, int] = {}  # file descriptor -> its socket's inode, when accepted
        self.refused = 0  # handshakes refused for the cap (ever)
        self._last_full_log = 0.0

    def live(self) -> int:
        """Connections that hold a slot: every open one."""
        for fd, inode in list(self.open.items()):
            if _socket_inode(fd) != inode:  # closed without a DISCONNECTED event
                self.open.pop(fd, None)
        return len(self.open)

    def stats(self) -> dict:
        return {"live": self.live(), "max": self.cap, "refused": self.refused}

    def on_monitor(self) -> None:
        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = ev["value"]
            if ev["event"] == zmq.EVENT_ACCEPTED:
                inode = _socket_inode(fd)
                if inode is not None:  # else already closed again
                    self.open[fd] = inode
            elif ev["event"] == zmq.EVENT_DISCONNECTED:
                self.open.pop(fd, None)

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
        if self.live() > self.cap:  # this connection is one of the open ones
            self.refused += 1
            now = time.monotonic()
            if now - self._last_full_log >= 10.0:
                self._last_full_log = now
                self.log(f"refusing connections: {self.cap} open, the maximum (--max-connections)")
            return FULL, b"too many connections", b""
        return b"200", b"OK", user

    def close(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        self.zap.close(linger=0)


def _socket_inode(fd: int) -> int | None:
    """The inode of the socket ``fd`` names in this process; None if it names none."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else None
