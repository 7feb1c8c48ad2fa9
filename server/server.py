"""The edit server: one ROUTER socket, answered by one socket thread; jobs on a worker thread.

The socket thread never does slow work: it checks requests, answers the quick ones, queues
jobs, forwards the worker's replies (which arrive over an inproc PUSH/PULL pair, since zmq
sockets belong to one thread) and cancels jobs whose client stopped sending heartbeats.
Any bad message gets an error reply; nothing a client sends can stop the loop.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from ganpaint.core.generators import resolve_device

from . import concept_store
from .config import ServerConfig
from .jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobIds, JobQueue
from .model_pool import ModelPool
from .protocol import (
    BAD_REQUEST,
    INTERNAL,
    PROTOCOL_VERSION,
    SERVER_VERSION,
    ProtocolError,
    error_header,
    pack,
    reply_header,
    unpack_header,
)
from .requests import JOB_KINDS, QUALITIES, JobRequest, Request, parse_request
from .runner import JobRunner
from .security import BindRefused, check_bind, is_loopback, secure
from .sessions import SessionCache

POLL_MS = 200  # how often the loop looks at the stop flag and the heartbeat clock
REAP_EVERY_S = 0.25
BATCH = 64  # messages handled per socket per turn, so neither side starves the other
RECENT_JOBS = 16  # finished jobs whose final reply can be fetched again after a reconnect
RECENT_TTL_S = 300.0
RECENT_BYTES = 512 * 1024 * 1024
BAD_LOG_EVERY_S = 10.0


def stderr_log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} ganpaint serve: {line}", file=sys.stderr, flush=True)


@dataclass
class Finished:
    at: float
    parts: list[bytes]  # header + frames, as sent
    nbytes: int


class EditServer:
    """``bind()`` then ``serve()`` (blocks until ``stop()``, which any thread or a signal
    handler may call)."""

    def __init__(self, cfg: ServerConfig, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.log = log or stderr_log
        self.device = resolve_device(cfg.device)
        self.ctx = zmq.Context()
        self.pool = ModelPool(self.device, cfg.download)
        self.known_models = ModelPool.known()
        self.sessions = SessionCache(cfg.session_budget_bytes)
        self.ids = JobIds(secrets.token_hex(3))
        self.endpoint: str | None = None
        self.jobs: dict[str, Job] = {}  # queued or running, or finished but not yet answered
        self.by_request: dict[str, str] = {}  # JobRequest.retry_key -> job id (dedupes retries)
        self.finished: OrderedDict[str, Finished] = OrderedDict()
        self.counts = {"done": 0, "failed": 0, "cancelled": 0, "bad_requests": 0}
        self._bad_since_log = 0
        self._last_bad = ""
        self._last_bad_log = time.monotonic()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._started = time.monotonic()
        self._outbox_addr = f"inproc://ganpaint-outbox-{secrets.token_hex(4)}"
        self._worker_sock = threading.local()
        self._router: zmq.Socket | None = None
        self._outbox: zmq.Socket | None = None
        self._auth = None
        runner = JobRunner(cfg, self.pool, self.sessions, self._emit, self.log)
        self.queue = JobQueue(
            runner, cfg.limits.max_queue, on_crash=self._worker_crash, on_exit=self._worker_exit
        )

    # -- life cycle --------------------------------------------------------------------------
    def bind(self) -> str:
        """Check the security rules, open the sockets, start the worker. Raises BindRefused
        (and then leaves nothing open)."""
        router = None
        try:
            check_bind(self.cfg)
            router = self.ctx.socket(zmq.ROUTER)
            router.linger = 0
            router.setsockopt(zmq.MAXMSGSIZE, self.cfg.limits.max_message_bytes())
            router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client's replies: dropped
            if not is_loopback(self.cfg.bind):
                self._auth = secure(self.ctx, router, self.cfg.curve)
            try:
                router.bind(self.cfg.bind)
            except zmq.ZMQError as e:
                raise BindRefused(f"cannot listen on {self.cfg.bind}: {e}") from None
        except BaseException:
            if router is not None:
                router.close()
            if self._auth is not None:
                self._auth.stop()
            self.ctx.term()
            raise
        self._router = router
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._outbox = self.ctx.socket(zmq.PULL)
        self._outbox.linger = 0
        self._outbox.bind(self._outbox_addr)
        self.queue.start()
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def serve(self) -> None:
        if self._router is None:
            self.bind()
        self.log(
            f"listening on {self.endpoint} (device {self.device}, default model "
            f"{self.cfg.model}, protocol {PROTOCOL_VERSION}, server {SERVER_VERSION})"
        )
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._outbox, zmq.POLLIN)
        next_reap = 0.0
        while not self._stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if self._outbox in events:
                self._drain(self._outbox, self._forward)
            if self._router in events:
                self._drain(self._router, self._receive)
            now = time.monotonic()
            if now >= next_reap:
                next_reap = now + REAP_EVERY_S
                self._reap(now)

    def _drain(self, sock: zmq.Socket, handle: Callable[[list], None]) -> int:
        """Handle up to BATCH waiting messages; returns how many there were."""
        for n in range(BATCH):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return n
            except zmq.ZMQError as e:
                self.log(f"receive failed: {e}")
                return n
            try:
                handle(parts)
            except Exception:  # last line of defence: the loop must survive anything
                self.log(f"unexpected error:\n{traceback.format_exc().rstrip()}")
        return BATCH

    def _shutdown(self) -> None:
        self.log("shutting down")
        dropped = self.queue.close(timeout=30.0)
        for job in dropped:
            self._final(job, error_header("cancelled", job.cancel_reason, job.request.id, job.id))
        while self._drain(self._outbox, self._forward) == BATCH:  # the running job's last word
            pass
        worker_done = not self.queue.worker_alive
        self._outbox.close(linger=0)
        self._router.close(linger=500)  # let the final replies go out
        if self._auth is not None:
            self._auth.stop()
        if worker_done:
            self.ctx.term()
        else:
            self.log("the worker did not stop in time; leaving it behind")
        self._stopped.set()

    # -- incoming requests -------------------------------------------------------------------
    def _receive(self, parts: list) -> None:
        identity = parts[0].bytes
        request_id = ""
        try:
            if len(parts) < 2:
                raise ProtocolError(BAD_REQUEST, "empty message: frame 0 must be a header")
            raw_header = parts[1].buffer  # no copy: an oversize header is refused unread
            header = unpack_header(raw_header)
            rid = header.get("id")
            request_id = rid if type(rid) is str and len(rid) <= 64 else ""
            req = parse_request(
                [p.buffer for p in parts[2:]], header, self.cfg.limits, self.known_models
            )
            if isinstance(req, JobRequest) and req.id:
                # Same id and same header bytes: the same request sent again by a client
                # that lost the reply (an id reused by another client does not match).
                req.retry_key = f"{req.id}:{hashlib.sha1(raw_header).hexdigest()}"
            self._dispatch(identity, req)
        except ProtocolError as e:
            self._bad(identity, request_id, e)
        except Exception as e:
            self.log(f"internal error on a request:\n{traceback.format_exc().rstrip()}")
            self._send(identity, [pack(error_header(INTERNAL, _one_line(e), request_id))])

    def _bad(self, identity: bytes, request_id: str, e: ProtocolError) -> None:
        self.counts["bad_requests"] += 1
        self._bad_since_log += 1
        self._last_bad = f"{e.code}: {e.message}"
        self._send(identity, [pack(error_header(e.code, e.message, request_id))])

    def _dispatch(self, identity: bytes, req: Request) -> None:
        if isinstance(req, JobRequest) and req.kind in JOB_KINDS:
            return self._submit(identity, req)
        handler = {
            "hello": self._hello,
            "models": self._models,
            "concepts": self._concepts,
            "status": self._status,
            "cancel": self._cancel_request,
            "heartbeat": self._heartbeat,
        }[req.kind]
        reply = handler(identity, req)
        if reply is not None:
            self._send(identity, [pack(reply)])

    def _hello(self, identity: bytes, req: Request) -> dict:
        return reply_header(
            "hello",
            req.id,
            server_version=SERVER_VERSION,
            protocol=PROTOCOL_VERSION,
            device=str(self.device),
            models=self.pool.describe(),
            default_model=self.cfg.model,
            limits=self.cfg.limits.to_dict(),
            concepts=True,
            qualities=list(QUALITIES),
            default_quality=self.cfg.quality,
            kinds=["hello", "models", "concepts", "status", "cancel", "heartbeat", *JOB_KINDS],
        )

    def _models(self, identity: bytes, req: Request) -> dict:
        return reply_header("models", req.id, models=self.pool.describe(), default=self.cfg.model)

    def _concepts(self, identity: bytes, req: Request) -> dict:
        model = req.model or self.cfg.model
        concepts = concept_store.list_concepts(model, self.log, include_all=req.all)
        return reply_header("concepts", req.id, model=model, concepts=concepts)

    def _status(self, identity: bytes, req: Request) -> dict:
        running, queued = self.queue.snapshot()
        return reply_header(
            "status",
            req.id,
            running=running.summary() if running else None,
            queued=[j.summary() for j in queued],
            jobs=[j.summary() for j in self.jobs.values() if j.state in (QUEUED, RUNNING)],
            sessions=self.sessions.stats(),
            models_loaded=self.pool.loaded(),
            device=str(self.device),
            uptime_s=round(time.monotonic() - self._started, 1),
            counts=dict(self.counts),
        )

    def _cancel_request(self, identity: bytes, req: Request) -> dict:
        job = self.jobs.get(req.job)
        if job is None:
            state = "finished" if req.job in self.finished else "unknown"
            return reply_header("cancel", req.id, job=req.job, state=state)
        state = self._cancel(job, "cancelled by a client")
        return reply_header("cancel", req.id, job=req.job, state=state)

    def _heartbeat(self, identity: bytes, req: Request) -> dict | None:
        job = self.jobs.get(req.job)
        if job is not None:
            job.last_seen, job.route = time.monotonic(), identity
            return reply_header(
                "heartbeat",
                req.id,
                job=job.id,
                state=job.state,
                position=self.queue.position(job),
            )
        done = self.finished.get(req.job)
        if done is not None:  # the final reply was lost with the old connection: again
            self._send(identity, done.parts)
            return None
        return error_header(
            BAD_REQUEST, f"no job {req.job!r} (unknown, or finished long ago)", req.id, req.job
        )

    def _submit(self, identity: bytes, req: JobRequest) -> None:
        if req.retry_key in self.by_request:  # a client retrying after a lost reply
            job_id = self.by_request[req.retry_key]
            job = self.jobs.get(job_id)
            if job is not None:
                job.last_seen, job.route = time.monotonic(), identity
                self._send(identity, [pack(self._accepted(job))])
                return
            done = self.finished.get(job_id)
            if done is not None:
                self._send(identity, done.parts)
                return
        req.model = model = req.model or self.cfg.model
        # Concept names are checked now, not after the wait in the queue.
        if req.kind == "edit" and req.concept is not None:
            concept_store.check_exists(model, req.concept)
        elif req.kind == "learn_concept":
            concept_store.check_new_name(model, req.name, req.replace)
        job = Job(self.ids.next(), req, identity)
        self.jobs[job.id] = job
        try:
            self.queue.submit(job)
        except ProtocolError:
            del self.jobs[job.id]
            raise
        if req.retry_key:
            self.by_request[req.retry_key] = job.id
        self._send(identity, [pack(self._accepted(job))])

    def _accepted(self, job: Job) -> dict:
        limits = self.cfg.limits
        return reply_header(
            "accepted",
            job.request.id,
            job=job.id,
            job_kind=job.kind,
            position=self.queue.position(job),
            heartbeat_s=limits.heartbeat_s,
            heartbeat_timeout_s=limits.heartbeat_timeout_s,
        )

    # -- cancellation and heartbeats --------------------------------------------------------
    def _cancel(self, job: Job, reason: str) -> str:
        state = self.queue.cancel(job, reason)
        if state == CANCELLED:  # it never ran: the worker will not answer it, we do
            self.log(
                f"{job.kind} {job.id} {job.request.describe()} cancelled while queued: {reason}"
            )
            self._final(job, error_header("cancelled", reason, job.request.id, job.id))
        return state

    def _reap(self, now: float) -> None:
        timeout = self.cfg.limits.heartbeat_timeout_s
        for job in list(self.jobs.values()):
            if job.state not in (QUEUED, RUNNING) or job.is_cancelled():
                continue
            silent = now - job.last_seen
            if silent > timeout:
                reason = f"no heartbeat from the client for {silent:.0f} s"
                self.log(f"{job.kind} {job.id}: {reason}; cancelling")
                self._cancel(job, reason)
        while self.finished:
            job_id, done = next(iter(self.finished.items()))
            if now - done.at <= RECENT_TTL_S:
                break
            self._forget(job_id)
        if self._bad_since_log and now - self._last_bad_log >= BAD_LOG_EVERY_S:
            self.log(f"answered {self._bad_since_log} bad request(s); latest: {self._last_bad}")
            self._bad_since_log, self._last_bad_log = 0, now

    def _forget(self, job_id: str) -> None:
        done = self.finished.pop(job_id, None)
        if done is not None:
            for rid in [r for r, j in self.by_request.items() if j == job_id]:
                del self.by_request[rid]

    # -- replies ------------------------------------------------------------------------------
    def _emit(self, job: Job, header: dict, frames: Sequence[bytes]) -> None:
        """Worker thread -> socket thread: [job id, final flag, header, *frames]."""
        sock = getattr(self._worker_sock, "sock", None)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.linger = 1000
            sock.connect(self._outbox_addr)
            self._worker_sock.sock = sock
        final = header.get("kind") in ("result", "error")
        sock.send_multipart([job.id.encode(), b"1" if final else b"0", pack(header), *frames])

    def _worker_exit(self) -> None:
        sock = getattr(self._worker_sock, "sock", None)
        if sock is not None:
            sock.close()

    def _worker_crash(self, job: Job, e: BaseException) -> None:
        self.log(f"{job.kind} {job.id}: worker error:\n{traceback.format_exc().rstrip()}")
        if job.state in (QUEUED, RUNNING):
            job.state = FAILED
            self._emit(job, error_header(INTERNAL, _one_line(e), job.request.id, job.id), [])

    def _forward(self, parts: list) -> None:
        job = self.jobs.get(parts[0].bytes.decode())
        if job is None:
            return
        payload = [p.bytes for p in parts[2:]]
        if parts[1].bytes == b"1":
            self._final(job, None, payload)
        else:
            self._send(job.route, payload)

    def _final(self, job: Job, header: dict | None, payload: list[bytes] | None = None) -> None:
        """Send a job's last reply, keep it a while for re-delivery, retire the job."""
        parts = payload if payload is not None else [pack(header)]
        self._send(job.route, parts)
        self.jobs.pop(job.id, None)
        key = {DONE: "done", CANCELLED: "cancelled"}.get(job.state, "failed")
        self.counts[key] += 1
        self.finished[job.id] = Finished(time.monotonic(), parts, sum(len(p) for p in parts))
        total = sum(f.nbytes for f in self.finished.values())
        while len(self.finished) > 1 and (len(self.finished) > RECENT_JOBS or total > RECENT_BYTES):
            old_id = next(iter(self.finished))
            total -= self.finished[old_id].nbytes
            self._forget(old_id)

    def _send(self, identity: bytes, parts: list[bytes]) -> None:
        try:
            self._router.send_multipart([identity, *parts], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # the client is not reading (gone, or its queue is full): drop, as ROUTER does
        except zmq.ZMQError as e:
            self.log(f"send failed: {e}")


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
