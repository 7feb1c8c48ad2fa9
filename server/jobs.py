"""Jobs and the per-device FIFO queue that runs them, one at a time, on one worker thread.

State changes that race (the socket thread cancelling while the worker picks a job up) happen
under the queue's lock, so every job ends with exactly one final reply: a queued job that is
cancelled is answered by the canceller, a running one by the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .protocol import BUSY, ProtocolError
from .requests import JobRequest

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


@dataclass(frozen=True)
class Owner:
    """Who submitted a job: the ROUTER identity of its connection and, under CURVE, the
    client's public key (z85; "" on loopback). Only the owner hears about the job."""

    identity: bytes
    key: str = ""


@dataclass
class Job:
    id: str
    request: JobRequest
    owner: Owner  # replies go to owner.identity, and only to it
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    state: str = QUEUED
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    progress: dict | None = None  # the latest progress report, for status

    @property
    def kind(self) -> str:
        return self.request.kind

    @property
    def route(self) -> bytes:
        return self.owner.identity

    def input_bytes(self) -> int:
        """Memory held by the request's pixels (what the server's byte budget counts)."""
        return sum(a.nbytes for a in (self.request.image, self.request.mask) if a is not None)

    def release(self) -> None:
        """Drop the pixels once the job has ended (the Job may be referenced a while longer)."""
        self.request.image = self.request.mask = None

    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def summary(self, label: str | None = None) -> dict:
        """For ``status``. ``label`` replaces the job id for clients other than the owner:
        they may see that the server is busy, not get a handle on someone else's job."""
        info = {
            "job": self.id if label is None else label,
            "mine": label is None,
            "kind": self.kind,
            "state": self.state,
            "model": self.request.model,
            "image": self.request.describe(),
            "age_s": round(time.monotonic() - self.created, 3),
        }
        if self.progress:
            info["progress"] = dict(self.progress)
        return info


class JobIds:
    """Job ids "<tag>-<n>-<16 random hex digits>": the tag is random per server run, so an id
    from before a restart never names a new job, and the random part makes an id a secret
    that only its submitter (and whom it tells, e.g. the plug-in's watchdog) can name.

    ``label(id)`` is the opaque stand-in that other clients see in ``status``."""

    def __init__(self, tag: str):
        self.tag = tag
        self._n = itertools.count(1)
        self._secret = secrets.token_bytes(16)

    def next(self) -> str:
        return f"{self.tag}-{next(self._n)}-{secrets.token_hex(8)}"

    def label(self, job_id: str) -> str:
        digest = hmac.new(self._secret, job_id.encode(), hashlib.sha256).hexdigest()
        return f"other-{digest[:10]}"


class JobQueue:
    """FIFO of jobs for one device with one worker thread.

    ``run(job)`` does the work and sends the job's final reply; it must not raise, but the
    worker survives if it does.
    """

    def __init__(
        self,
        run: Callable[[Job], None],
        max_queue: int,
        name: str = "ganpaint-worker",
        on_crash: Callable[[Job, BaseException], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        stale_after_s: float | None = None,
    ):
        self._run = run
        # A job whose client has been silent this long when its turn comes is not started.
        self.stale_after_s = stale_after_s
        self._on_crash = on_crash
        self._on_exit = on_exit  # runs on the worker thread as it ends (closes its socket)
        self.max_queue = max_queue
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> int:
        """Queue a job; returns how many jobs are ahead of it (the running one included)."""
        with self._cond:
            if self._closed:
                raise ProtocolError(BUSY, "the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise ProtocolError(
                    BUSY, f"{len(self._pending)} jobs are already waiting (limit {self.max_queue})"
                )
            ahead = len(self._pending) + (self._running is not None)
            self._pending.append(job)
            self._cond.notify()
            return ahead

    def cancel(self, job: Job, reason: str = "") -> str:
        """Returns "cancelled" when the job was still queued (the caller answers it),
        "cancelling" when it is running (the worker answers within one step), or the
        job's final state when it had already ended."""
        with self._cond:
            if job.state == QUEUED:
                try:
                    self._pending.remove(job)
                except ValueError:
                    pass
                job.state, job.cancel_reason = CANCELLED, reason
                job.cancel_event.set()
                return CANCELLED
            if job.state == RUNNING:
                if not job.cancel_event.is_set():
                    job.cancel_reason = reason
                job.cancel_event.set()
                return "cancelling"
            return job.state

    def position(self, job: Job) -> int:
        with self._cond:
            if job.state != QUEUED:
                return 0
            try:
                return self._pending.index(job) + (self._running is not None)
            except ValueError:
                return 0

    def snapshot(self) -> tuple[Job | None, list[Job]]:
        with self._cond:
            return self._running, list(self._pending)

    def close(self, timeout: float = 10.0) -> list[Job]:
        """Stop taking jobs, cancel the running one, wait for the worker; returns the jobs
        that were still queued (now cancelled, for the caller to answer)."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            for job in dropped:
                job.state, job.cancel_reason = CANCELLED, "the server is shutting down"
                job.cancel_event.set()
            if self._running is not None:
                self._running.cancel_reason = "the server is shutting down"
                self._running.cancel_event.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return dropped

    @property
    def worker_alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self._work()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                job.state = RUNNING
                self._running = job
                silent = time.monotonic() - job.last_seen
                if self.stale_after_s is not None and silent > self.stale_after_s:
                    # Its client missed several heartbeats: do not start work for nobody
                    # (the runner answers a cancelled job at once, without running it).
                    job.cancel_reason = f"no heartbeat from the client for {silent:.1f} s"
                    job.cancel_event.set()
            try:
                self._run(job)
            except BaseException as e:  # the worker must outlive any job
                if self._on_crash is not None:
                    try:
                        self._on_crash(job, e)
                    except Exception:
                        pass
            finally:
                with self._cond:
                    self._running = None
