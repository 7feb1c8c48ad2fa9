"""The edit server: one ROUTER socket, answered by one socket thread; jobs on a worker thread.

The socket thread never does slow work: it checks requests, answers the quick ones, queues
jobs, forwards the worker's replies (which arrive over an inproc PUSH/PULL pair, since zmq
sockets belong to one thread) and cancels jobs whose client stopped sending heartbeats.
Any bad message gets an error reply; nothing a client sends can stop the loop.

A job belongs to the connection that submitted it (its ROUTER identity and, under CURVE, its
public key): only that connection gets the job's progress and final reply and may heartbeat
it. Memory is bounded in bytes: the pixels of queued and running jobs plus final replies
that could not be delivered stay under ``limits.max_pending_bytes``; past it, ``busy``. At
most ``limits.max_connections`` clients are connected at once (connections.py), which bounds
what libzmq itself holds of incoming messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import secrets
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from ganpaint.core.errors import one_line
from ganpaint.core.fast import QUALITIES
from ganpaint.core.generators import ModelError, resolve_device
from ganpaint.core.pipeline import PipelineConfig

from . import concept_store
from .config import ServerConfig
from .connections import ConnectionGate
from .jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobIds, JobQueue, Owner
from .model_pool import ModelPool
from .protocol import (
    BAD_REQUEST,
    BUSY,
    INTERNAL,
    PROTOCOL_VERSION,
    SERVER_VERSION,
    ProtocolError,
    error_header,
    pack,
    reply_header,
    unpack_header,
)
from .requests import JOB_KINDS, JobRequest, Request, parse_request, upload_sizes
from .runner import JobRunner
from .security import BindRefused, check_bind, is_loopback, secure
from .sessions import SessionCache
from .uploads import Uploads

POLL_MS = 200  # how often the loop looks at the stop flag and the heartbeat clock
REAP_EVERY_S = 0.25
BATCH = 64  # messages handled per socket per turn, so neither side starves the other
# Complete messages libzmq may hold per connection before the server reads them. Under
# CURVE one more: with 1 the handshake never completes (libzmq 4.3.5, measured).
RCVHWM = 1
RCVHWM_CURVE = 2
# A final reply that could not be delivered (its connection was gone) waits this long for
# its owner to reconnect; a delivered one is freed at once.
UNDELIVERED_KEEP_S = 30.0
ENDED_IDS = 256  # ended jobs remembered (ids and owners only) to answer "finished"
PEER_KEYS = 4096  # connections whose CURVE key is remembered
BAD_LOG_EVERY_S = 10.0
# TCP keepalive: an idle connection is probed after 30 s, then every 5 s; 3 unanswered probes
# (45 s in all) drop it.
KEEPALIVE_IDLE_S, KEEPALIVE_INTVL_S, KEEPALIVE_CNT = 30, 5, 3
AUTO_ID_BYTES = 5  # a routing id libzmq makes up: a zero byte and a 32-bit counter
LOADS_WAITING = 64  # `concepts` requests waiting for a library to be read; more get busy
MIB = 1024 * 1024


def stderr_log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} ganpaint serve: {line}", file=sys.stderr, flush=True)


@dataclass
class Finished:
    """An undelivered final reply, kept for its owner."""

    at: float
    parts: list  # header + frames, as sent
    nbytes: int
    owner: Owner


def _user_id(frame) -> str:
    """The CURVE public key (z85) the authenticator put on a message; "" without CURVE."""
    try:
        return frame.get("User-Id") or ""
    except zmq.ZMQError:
        return ""


class EditServer:
    """``bind()`` then ``serve()`` (blocks until ``stop()``, which any thread or a signal
    handler may call)."""

    def __init__(self, cfg: ServerConfig, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.log = log or stderr_log
        # With a cluster the jobs run on its workers' devices; this process loads no model.
        self.device = resolve_device(cfg.device if cfg.cluster is None else "cpu")
        self.ctx = zmq.Context()
        self.pool = ModelPool(self.device, cfg.download, cfg.checkpoints)
        self.known_models = ModelPool.known()
        self.sessions = SessionCache(cfg.session_budget_bytes)
        self.concepts = concept_store.ConceptIndex(self.log)
        self.ids = JobIds(secrets.token_hex(3))
        self.endpoint: str | None = None
        self.jobs: dict[str, Job] = {}  # queued or running, or finished but not yet answered
        self.by_request: dict[str, str] = {}  # JobRequest.retry_key -> job id (dedupes retries)
        self.finished: OrderedDict[str, Finished] = OrderedDict()  # undelivered final replies
        self.uploads = Uploads(cfg.limits.chunk_bytes)  # pixels arriving in chunks
        self.ended: OrderedDict[str, Owner] = OrderedDict()  # recently ended job ids
        # identity -> CURVE key of its latest message: a job's output is withheld from an
        # identity now used by another key (kept for the owner instead).
        self._peer_keys: OrderedDict[bytes, str] = OrderedDict()
        self.counts = {"done": 0, "failed": 0, "cancelled": 0, "bad_requests": 0}
        self._bad_since_log = 0
        self._last_bad = ""
        self._last_bad_log = time.monotonic()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._started = time.monotonic()
        self._outbox_addr = f"inproc://ganpaint-outbox-{secrets.token_hex(4)}"
        self._answers_addr = f"inproc://ganpaint-answers-{secrets.token_hex(4)}"
        self._answers: zmq.Socket | None = None
        # `concepts` requests whose library changed since it was last read: the loader
        # thread reads it (off the socket thread) and answers them.
        self._loads: queue.Queue = queue.Queue(maxsize=LOADS_WAITING)
        self._loader = threading.Thread(
            target=self._load_concepts, name="ganpaint-concepts", daemon=True
        )
        self._worker_sock = threading.local()
        self._router: zmq.Socket | None = None
        self._outbox: zmq.Socket | None = None
        self._gate: ConnectionGate | None = None
        runner = JobRunner(cfg, self.pool, self.sessions, self._emit, self.log, self.concepts)
        lim = cfg.limits
        # Missing four heartbeats (and a third of the timeout) when its turn comes means the
        # client is most likely gone: the job is not started for nobody.
        stale_after_s = max(4 * lim.heartbeat_s, lim.heartbeat_timeout_s / 3)
        if cfg.cluster is not None:  # Ray, an optional extra: imported only when asked for
            from .cluster.front import ClusterQueue

            self.queue = ClusterQueue(cfg, self._emit, self.log, stale_after_s, self._worker_exit)
        else:
            self.queue = JobQueue(
                runner,
                lim.max_queue,
                on_crash=self._worker_crash,
                on_exit=self._worker_exit,
                stale_after_s=stale_after_s,
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
            # libzmq reads whole messages ahead into each connection's queue (1000 by
            # default, here 2 GiB+ of images): keep at most RCVHWM complete messages per
            # connection; beyond that libzmq stops reading it (TCP pushes back on the client).
            router.setsockopt(zmq.RCVHWM, RCVHWM if is_loopback(self.cfg.bind) else RCVHWM_CURVE)
            # Sending to a vanished client fails (instead of vanishing), so the server knows
            # whether a final reply was delivered or must be kept for a reconnect.
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A peer whose machine or network vanished (no FIN ever comes) is found by TCP
            # keepalive probes and dropped, freeing its slot. Not ZMTP heartbeats
            # (ZMQ_HEARTBEAT_IVL): with libzmq 4.3.5 a ping to a connection whose reading is
            # paused by RCVHWM after its peer closed aborts the process (stream_engine_base
            # "!_io_error", measured with kill -9'd clients).
            router.setsockopt(zmq.TCP_KEEPALIVE, 1)
            router.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
            router.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
            router.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
            loopback = is_loopback(self.cfg.bind)
            if loopback:
                # A client reopening its socket with the same (secret, random) routing id
                # takes its connection over at once instead of being refused until the old
                # one is noticed gone (ganpaint_client.py does this). Not under CURVE: there a
                # connection may not be taken over by another key, even knowing the id.
                router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            keys = None if loopback else secure(router, self.cfg.curve)
            self._gate = ConnectionGate(
                self.ctx, router, self.cfg.limits.max_connections, keys, self.log
            )
            try:
                router.bind(self.cfg.bind)
            except zmq.ZMQError as e:
                raise BindRefused(f"cannot listen on {self.cfg.bind}: {e}") from None
        except BaseException:
            self.queue.close(timeout=0)  # a cluster's workers stop with the server
            if self._gate is not None:
                self._gate.close()
            if router is not None:
                router.close()
            self.ctx.term()
            raise
        self._router = router
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._outbox = self.ctx.socket(zmq.PULL)
        self._outbox.linger = 0
        self._outbox.bind(self._outbox_addr)
        self._answers = self.ctx.socket(zmq.PULL)
        self._answers.linger = 0
        self._answers.bind(self._answers_addr)
        self._loader.start()
        self._load_later(self.cfg.model)  # the default model's library, read ahead
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
            f"listening on {self.endpoint} (device {self._device_label()}, default model "
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
        poller.register(self._answers, zmq.POLLIN)
        gate = self._gate
        poller.register(gate.monitor, zmq.POLLIN)
        poller.register(gate.zap, zmq.POLLIN)
        next_reap = 0.0
        while not self._stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if gate.monitor in events:
                gate.on_monitor()
            if gate.zap in events:
                self._guarded(gate.on_zap)
            if self._outbox in events:
                self._drain(self._outbox, self._forward)
            if self._answers in events:
                self._drain(self._answers, self._answer)
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
            self._guarded(handle, parts)
        return BATCH

    def _guarded(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception:  # last line of defence: the loop must survive anything
            self.log(f"unexpected error:\n{traceback.format_exc().rstrip()}")

    def _shutdown(self) -> None:
        self.log("shutting down")
        dropped = self.queue.close(timeout=30.0)
        for job in dropped:
            self._final(job, error_header("cancelled", job.cancel_reason, job.request.id, job.id))
        while self._drain(self._outbox, self._forward) == BATCH:  # the running job's last word
            pass
        worker_done = not self.queue.worker_alive
        with contextlib.suppress(queue.Full):  # the loader's stop (no new requests come)
            self._loads.put(None, timeout=30.0)
        self._loader.join(30.0)
        self._outbox.close(linger=0)
        self._answers.close(linger=0)
        self._gate.close()
        self._router.close(linger=500)  # let the final replies go out
        if worker_done and not self._loader.is_alive():
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
            if identity[:1] == b"\0" and len(identity) != AUTO_ID_BYTES:
                # libzmq names clients that set no routing id b"\0" + 4 bytes; a client may not
                # choose ids in that range (it could take over such a connection).
                raise ProtocolError(
                    BAD_REQUEST,
                    "routing ids that start with a zero byte are reserved to ZeroMQ; set one "
                    "that does not (a random secret of at least 16 bytes)",
                )
            owner = Owner(identity, _user_id(parts[1]))
            if owner.key:
                self._peer_keys[identity] = owner.key
                self._peer_keys.move_to_end(identity)
                while len(self._peer_keys) > PEER_KEYS:
                    self._peer_keys.popitem(last=False)
            raw_header = parts[1].buffer  # no copy: an oversize header is refused unread
            header = unpack_header(raw_header)
            rid = header.get("id")
            request_id = rid if type(rid) is str and len(rid) <= 64 else ""
            req = parse_request(
                [p.buffer for p in parts[2:]],
                header,
                self.cfg.limits,
                self._known_models(),
                admit=self._admit,
            )
            if isinstance(req, JobRequest) and req.id:
                # Same sender, id and header bytes: the same request sent again by a client
                # that lost the reply (another client reusing the id does not match).
                digest = hashlib.sha1(raw_header).hexdigest()
                req.retry_key = f"{identity.hex()}:{owner.key}:{req.id}:{digest}"
            if isinstance(req, JobRequest) and req.image_meta is not None and req.image is None:
                self._start_upload(owner, req, header, bytes(raw_header))
            elif req.kind == "chunk":
                self._chunk(owner, req)
            else:
                self._dispatch(owner, req)
        except ProtocolError as e:
            self._bad(identity, request_id, e)
        except Exception as e:
            self.log(f"internal error on a request:\n{traceback.format_exc().rstrip()}")
            self._send(identity, [pack(error_header(INTERNAL, one_line(e), request_id))])

    def _start_upload(self, owner: Owner, req: JobRequest, header: dict, raw: bytes) -> None:
        """A job request whose pixels follow in chunks: reserve their bytes, grant credit."""
        if req.retry_key in self.by_request:  # sent again, and its upload became a job
            return self._submit(owner, req)
        now = time.monotonic()
        upload = self.uploads.find(req.retry_key)
        if upload is None:
            sizes = upload_sizes(req)
            self._admit(sum(sizes))
            upload = self.uploads.start(owner, req, header, raw, sizes, now)
        upload.last_seen = now
        self._send(
            owner.identity,
            [
                pack(
                    reply_header(
                        "upload",
                        req.id,
                        upload=upload.id,
                        chunk_bytes=upload.chunk_bytes,
                        total_bytes=upload.nbytes,
                        next=upload.next,
                        credit=upload.credit(),
                    )
                )
            ],
        )

    def _chunk(self, owner: Owner, req: Request) -> None:
        upload = self.uploads.get(req.upload, owner)
        upload.last_seen = time.monotonic()
        try:
            complete = upload.add(req.index, req.data)
        except ProtocolError:
            self.uploads.close(upload)
            raise
        if not complete:
            credit = reply_header(
                "credit",
                upload.request.id,
                upload=upload.id,
                next=upload.next,
                credit=upload.credit(),
            )
            self._send(owner.identity, [pack(credit)])
            return
        self.uploads.close(upload)  # its bytes now go to the job (admitted at the start)
        header = {k: v for k, v in upload.header.items() if k != "upload"}
        job_req = parse_request(
            upload.frames(), header, self.cfg.limits, self.known_models, admit=None
        )
        job_req.retry_key = upload.request.retry_key
        self._dispatch(owner, job_req)

    def _bad(self, identity: bytes, request_id: str, e: ProtocolError) -> None:
        self.counts["bad_requests"] += 1
        self._bad_since_log += 1
        self._last_bad = f"{e.code}: {e.message}"
        self._send(identity, [pack(error_header(e.code, e.message, request_id))])

    def _admit(self, nbytes: int) -> None:
        """Refuse a job whose pixels would take the server past its byte budget."""
        budget = self.cfg.limits.max_pending_bytes
        held = self.pending_bytes()
        if held + nbytes <= budget:
            return
        if nbytes > budget:
            raise ProtocolError(
                BUSY,
                f"this request carries {nbytes / MIB:.0f} MiB of pixels, more than the "
                f"server's budget of {budget / MIB:.0f} MiB for waiting work; send a smaller "
                "image",
            )
        raise ProtocolError(
            BUSY,
            f"the server holds {held / MIB:.0f} MiB of queued or running images and "
            f"uncollected results; {nbytes / MIB:.0f} MiB more would pass its budget of "
            f"{budget / MIB:.0f} MiB; retry when a job has finished",
        )

    def pending_bytes(self) -> int:
        """What the byte budget counts: job inputs held plus undelivered final replies."""
        return (
            sum(j.input_bytes() for j in self.jobs.values())
            + sum(f.nbytes for f in self.finished.values())
            + self.uploads.nbytes()
        )

    def _known_models(self) -> set[str]:
        """The registered models now: one added with `ganpaint models add` while the server
        runs counts at once (as it is listed at once); a broken models config keeps the
        last good set."""
        try:
            self.known_models = ModelPool.known()
        except ModelError:
            pass
        return self.known_models

    def _dispatch(self, owner: Owner, req: Request) -> None:
        identity = owner.identity
        if isinstance(req, JobRequest) and req.kind in JOB_KINDS:
            return self._submit(owner, req)
        handler = {
            "hello": self._hello,
            "models": self._models,
            "concepts": self._concepts,
            "status": self._status,
            "cancel": self._cancel_request,
            "heartbeat": self._heartbeat,
        }[req.kind]
        reply = handler(owner, req)
        if reply is not None:
            self._send(identity, [pack(reply)])

    def _hello(self, owner: Owner, req: Request) -> dict:
        return reply_header(
            "hello",
            req.id,
            server_version=SERVER_VERSION,
            protocol=PROTOCOL_VERSION,
            device=self._device_label(),
            models=self.pool.describe(),
            default_model=self.cfg.model,
            limits=self.cfg.limits.to_dict(),
            concepts=True,
            qualities=list(QUALITIES),
            # The margin around a selection that the edit's crop adds, × the selection's
            # longer side: a client that crops before sending adds the same.
            crop_context=PipelineConfig.context,
            default_quality=self.cfg.quality,
            sessions="shared" if self.cfg.share_sessions else "client",
            kinds=["hello", "models", "concepts", "status", "cancel", "heartbeat", *JOB_KINDS],
        )

    def _models(self, owner: Owner, req: Request) -> dict:
        return reply_header("models", req.id, models=self.pool.describe(), default=self.cfg.model)

    def _concepts(self, owner: Owner, req: Request) -> dict | None:
        model = req.model or self.cfg.model
        listing = self.concepts.current(model)
        if listing is None:  # changed since it was read: the loader thread answers
            try:
                self._loads.put_nowait((owner.identity, req))
            except queue.Full:
                raise ProtocolError(
                    BUSY, "the server is reading its concept library; retry in a moment"
                ) from None
            return None
        return _concepts_reply(req, model, listing)

    def _load_later(self, model: str) -> None:
        """Read a model's library on the loader thread (if it changed), answering no one."""
        try:
            self._loads.put_nowait((None, Request(kind="concepts", id="", model=model)))
        except queue.Full:
            pass  # the loader is busy with requests, which read it anyway

    def _load_concepts(self) -> None:
        """The loader thread: read libraries that changed and answer the `concepts`
        requests that waited for them, through the answers socket."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.linger = 0
        sock.connect(self._answers_addr)
        try:
            while (item := self._loads.get()) is not None:
                identity, req = item
                model = req.model or self.cfg.model
                try:
                    reply = _concepts_reply(req, model, self.concepts.load(model))
                except ProtocolError as e:
                    reply = error_header(e.code, e.message, req.id)
                except Exception as e:
                    self.log(f"reading the concepts of {model}:\n{traceback.format_exc().rstrip()}")
                    reply = error_header(INTERNAL, one_line(e), req.id)
                if identity is not None:
                    sock.send_multipart([identity, pack(reply)])
        finally:
            sock.close()

    def _answer(self, parts: list) -> None:
        self._send(parts[0].bytes, parts[1:])

    def _status(self, owner: Owner, req: Request) -> dict:
        running, queued = self.queue.snapshot()

        def summary(job: Job) -> dict:  # other clients' jobs: no id they could act on
            return job.summary(None if job.owner == owner else self.ids.label(job.id))

        return reply_header(
            "status",
            req.id,
            running=summary(running) if running else None,
            queued=[summary(j) for j in queued],
            jobs=[summary(j) for j in self.jobs.values() if j.state in (QUEUED, RUNNING)],
            pending_bytes=self.pending_bytes(),
            connections=self._gate.stats(),
            sessions=self.sessions.stats(),
            models_loaded=self.pool.loaded(),
            device=self._device_label(),
            uptime_s=round(time.monotonic() - self._started, 1),
            counts=dict(self.counts),
            **({"workers": self.queue.workers()} if self.cfg.cluster is not None else {}),
        )

    def _device_label(self) -> str:
        return self.queue.device_label() if self.cfg.cluster is not None else str(self.device)

    def _cancel_request(self, owner: Owner, req: Request) -> dict:
        # Whoever names a job may cancel it: ids are secrets only the submitter learns (and
        # passes on, as the plug-in does to its watchdog, which cancels the job of a killed
        # plug-in from another process). Cancelling yields nothing of the job's output.
        job = self.jobs.get(req.job)
        if job is None:
            ended = req.job in self.ended or req.job in self.finished
            return reply_header(
                "cancel", req.id, job=req.job, state="finished" if ended else "unknown"
            )
        by = "its client" if job.owner == owner else "another client"
        state = self._cancel(job, f"cancelled by {by}")
        return reply_header("cancel", req.id, job=req.job, state=state)

    def _heartbeat(self, owner: Owner, req: Request) -> dict | None:
        job = self.jobs.get(req.job)
        if job is not None and job.owner == owner:
            job.last_seen = time.monotonic()
            return reply_header(
                "heartbeat",
                req.id,
                job=job.id,
                state=job.state,
                position=self.queue.position(job),
            )
        done = self.finished.get(req.job)
        if done is not None and done.owner == owner:
            # The final reply was lost with the connection; the owner reconnected: again.
            if self._send(owner.identity, done.parts):
                self.finished.pop(req.job, None)
            return None
        if self.ended.get(req.job) == owner:
            return error_header(
                BAD_REQUEST, f"job {req.job!r} has ended; its final reply was sent", req.id, req.job
            )
        # The same answer whether the job is unknown or another client's: nothing to learn.
        return error_header(
            BAD_REQUEST,
            f"no job {req.job!r} of this connection (unknown, ended, or another client's)",
            req.id,
            req.job,
        )

    def _submit(self, owner: Owner, req: JobRequest) -> None:
        identity = owner.identity
        if req.retry_key in self.by_request:  # a client retrying after a lost reply
            job_id = self.by_request[req.retry_key]
            job = self.jobs.get(job_id)
            if job is not None:
                job.last_seen = time.monotonic()
                self._send(identity, [pack(self._accepted(job))])
                return
            done = self.finished.get(job_id)
            if done is not None:
                if self._send(identity, done.parts):
                    self.finished.pop(job_id, None)
                return
            if job_id in self.ended:
                msg = f"this request already ran as job {job_id!r}; its final reply was sent"
                self._send(identity, [pack(error_header(BAD_REQUEST, msg, req.id, job_id))])
                return
        req.model = model = req.model or self.cfg.model
        req.scope = self._session_scope(owner, req)
        # Concept names are checked now, not after the wait in the queue, against the library
        # as last read; if it changed since, the worker checks them (and the loader reads it).
        if (req.kind == "edit" and req.concept is not None) or req.kind == "learn_concept":
            listing = self.concepts.current(model)
            if listing is None:
                self._load_later(model)
            elif req.kind == "edit":
                listing.check_exists(req.concept)
            else:
                listing.check_new_name(req.name, req.replace)
        job = Job(self.ids.next(), req, owner)
        self.jobs[job.id] = job
        try:
            self.queue.submit(job)
        except ProtocolError:
            del self.jobs[job.id]
            raise
        if req.retry_key:
            self.by_request[req.retry_key] = job.id
        self._send(identity, [pack(self._accepted(job))])

    def _session_scope(self, owner: Owner, req: JobRequest) -> str:
        """Whose cached sessions a job may use: the client's own (its CURVE key, else the
        secret session name it sends, else its connection), or everyone's if shared."""
        if self.cfg.share_sessions:
            return "shared"
        if owner.key:
            who = f"key:{owner.key}"
        elif req.session:
            who = f"session:{req.session}"
        else:
            who = f"connection:{owner.identity.hex()}"
        return hashlib.sha256(who.encode()).hexdigest()

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
        for upload in self.uploads.reap(now, timeout):
            self.log(f"upload {upload.id}: nothing from its client for {timeout:.0f} s; dropped")
        while self.finished:
            job_id, done = next(iter(self.finished.items()))
            if now - done.at <= UNDELIVERED_KEEP_S:
                break
            del self.finished[job_id]
        if self._bad_since_log and now - self._last_bad_log >= BAD_LOG_EVERY_S:
            self.log(f"answered {self._bad_since_log} bad request(s); latest: {self._last_bad}")
            self._bad_since_log, self._last_bad_log = 0, now

    def _forget(self, job_id: str) -> None:
        """Drop all memory of an ended job (its id falls out of ``ended``)."""
        self.ended.pop(job_id, None)
        self.finished.pop(job_id, None)
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
        # copy=False: the pixels are not copied again on their way to the socket thread.
        sock.send_multipart(
            [job.id.encode(), b"1" if final else b"0", pack(header), *frames], copy=False
        )

    def _worker_exit(self) -> None:
        sock = getattr(self._worker_sock, "sock", None)
        if sock is not None:
            sock.close()

    def _worker_crash(self, job: Job, e: BaseException) -> None:
        self.log(f"{job.kind} {job.id}: worker error:\n{traceback.format_exc().rstrip()}")
        if job.state in (QUEUED, RUNNING):
            job.state = FAILED
            self._emit(job, error_header(INTERNAL, one_line(e), job.request.id, job.id), [])

    def _forward(self, parts: list) -> None:
        job = self.jobs.get(parts[0].bytes.decode())
        if job is None:
            return
        payload = parts[2:]  # zmq Frames: forwarded without copying the pixels
        if parts[1].bytes == b"1":
            self._final(job, None, payload)
        else:
            self._send_job(job, payload)

    def _send_job(self, job: Job, parts: list) -> bool:
        """Send to a job's owner; False (not sent) if its identity now speaks for another
        key (possible only under CURVE)."""
        if self._peer_keys.get(job.route, job.owner.key) != job.owner.key:
            return False
        return self._send(job.route, parts)

    def _final(self, job: Job, header: dict | None, payload: list | None = None) -> None:
        """Send a job's last reply to its owner, retire the job, and keep the reply (for
        the owner only) if it could not be delivered."""
        parts = payload if payload is not None else [pack(header)]
        delivered = self._send_job(job, parts)
        self.jobs.pop(job.id, None)
        job.release()
        key = {DONE: "done", CANCELLED: "cancelled"}.get(job.state, "failed")
        self.counts[key] += 1
        self.ended[job.id] = job.owner
        while len(self.ended) > ENDED_IDS:
            self._forget(next(iter(self.ended)))
        if not delivered:
            nbytes = sum(len(p) for p in parts)
            self.finished[job.id] = Finished(time.monotonic(), parts, nbytes, job.owner)

    def _send(self, identity: bytes, parts: list) -> bool:
        """True when the message was handed to the client's connection."""
        try:
            self._router.send_multipart([identity, *parts], zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False  # the client is not reading (its queue is full): dropped
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:  # unreachable: the client is gone
                self.log(f"send failed: {e}")
            return False


def _concepts_reply(req: Request, model: str, listing: concept_store.Listing) -> dict:
    return reply_header("concepts", req.id, model=model, concepts=listing.concepts(req.all))
