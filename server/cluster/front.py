"""The front's side of a cluster: a job queue (same interface as jobs.JobQueue) whose jobs run
on Ray actors, each photo's jobs on the worker that holds its session.

One dispatcher thread per worker runs that worker's jobs one at a time, streaming each job's
replies back to the socket thread through ``emit`` as the single server's worker thread does.
Routing: a photo's key (routing.py) goes to the worker that last ran it while that worker is
up, else to its home on a consistent-hash ring of the live workers; an idle worker takes a
waiting job from a busy one only when no worker holds or waits on that job's photo. Each
worker's queue takes turns among seats (fair.py).

Faults: a worker that dies mid-job is marked down, its waiting jobs and its keys move to the
others, and the job runs once more on another worker (the session is rebuilt there from the
request); its client sees progress go on. Ray restarts the dead actor; a probe every second
brings it back into the ring once it answers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from ganpaint.core.errors import one_line

from ..config import ClusterConfig, ServerConfig
from ..jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job
from ..protocol import BUSY, INTERNAL, ProtocolError, error_header
from .fair import FairQueue
from .ring import HashRing
from .routing import client_of, photo_key
from .worker import ClusterWorker, is_final

NAMESPACE = "ganpaint"
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 5.0
START_TIMEOUT_S = 120.0  # for every worker to answer its first probe
ATTEMPTS = 2  # a job runs once more after its worker died under it, not again
AFFINITY_KEYS = 65536  # photo keys remembered with the worker that ran them
ACTOR_CONCURRENCY = 4  # a job, cancels and probes at once in one worker


class ClusterError(Exception):
    """The cluster could not be joined or its workers not started (one line for a person)."""


@dataclass
class Slot:
    """The front's view of one worker actor."""

    name: str
    handle: Any
    pending: FairQueue = field(default_factory=FairQueue)
    running: Job | None = None
    up: bool = True
    info: dict = field(default_factory=dict)


class ClusterQueue:
    def __init__(
        self,
        cfg: ServerConfig,
        emit: Callable[[Job, dict, Sequence[bytes]], None],
        log: Callable[[str], None],
        stale_after_s: float | None = None,
        on_exit: Callable[[], None] | None = None,
    ):
        assert cfg.cluster is not None
        self.cfg, self.emit, self.log = cfg, emit, log
        self.stale_after_s = stale_after_s
        self._on_exit = on_exit
        self.max_queue = cfg.limits.max_queue
        self._cond = threading.Condition()
        self._closed = False
        self._keys: dict[str, str | None] = {}  # job id -> photo key, while queued or running
        self._attempts: dict[str, int] = {}
        self._affinity: OrderedDict[str, str] = OrderedDict()  # photo key -> worker name
        self._started_ray = False
        self.slots = self._start_workers(cfg.cluster)
        self._by_name = {s.name: s for s in self.slots}
        self._ring = HashRing(self._by_name)
        self._threads = [
            threading.Thread(target=self._loop, args=(s,), name=f"ganpaint-{s.name}", daemon=True)
            for s in self.slots
        ]
        self._prober = threading.Thread(target=self._probe_loop, name="ganpaint-probe", daemon=True)

    # -- start and stop ----------------------------------------------------------------------
    def _start_workers(self, cc: ClusterConfig) -> list[Slot]:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": NAMESPACE, "configure_logging": False}
            if cc.address is None:  # a cluster of this machine alone, started here
                kwargs.update(
                    address="local",
                    num_cpus=max(cc.workers, os.cpu_count() or 1),
                    include_dashboard=False,
                    # Ray runs workers at nice 15 by default; edits are interactive work that
                    # a seat waits for, as on the single server (nice 0).
                    _system_config={"worker_niceness": 0},
                )
                if cc.object_store_mb:
                    kwargs["object_store_memory"] = cc.object_store_mb * 1024 * 1024
            else:
                kwargs["address"] = cc.address
            try:
                ray.init(**kwargs)
            except Exception as e:
                where = f"join the Ray cluster at {cc.address}" if cc.address else "start Ray"
                raise ClusterError(f"cannot {where}: {one_line(e)}") from None
            self._started_ray = True
        gpus = self._gpus_per_worker(cc)
        actor = ray.remote(ClusterWorker)
        run_id = os.urandom(3).hex()
        slots = []
        for i in range(cc.workers):
            name = f"ganpaint-worker-{i}-{run_id}"
            handle = actor.options(
                name=name,
                num_cpus=1,
                num_gpus=gpus,
                max_restarts=-1,  # Ray starts a dead worker again (empty); the probe lets it back
                max_task_retries=0,  # the front decides what runs again, and only once
                max_concurrency=ACTOR_CONCURRENCY,
            ).remote(self.cfg, name, cc.threads)
            slots.append(Slot(name, handle, up=False))
        deadline = time.monotonic() + START_TIMEOUT_S
        for slot in slots:
            try:
                wait_s = max(1.0, deadline - time.monotonic())
                slot.info = ray.get(slot.handle.info.remote(), timeout=wait_s)
            except (GetTimeoutError, RayError) as e:
                has = ray.cluster_resources()
                self._kill(slots)
                raise ClusterError(
                    f"worker {slot.name} did not start (it needs 1 {'GPU' if gpus else 'CPU'}; "
                    f"the cluster has {has}): {one_line(e)}"
                ) from None
            slot.up = True
        devices = ", ".join(f"{s.name} {s.info.get('device')}@{s.info.get('host')}" for s in slots)
        self.log(f"cluster: {len(slots)} workers up: {devices}")
        return slots

    def _gpus_per_worker(self, cc: ClusterConfig) -> int:
        """One GPU per worker with --device cuda, or auto on a cluster with a GPU per worker."""
        if self.cfg.device == "cpu":
            return 0
        have = ray.cluster_resources().get("GPU", 0)
        if self.cfg.device == "cuda" or have >= cc.workers:
            return 1
        return 0

    def _kill(self, slots: list[Slot]) -> None:
        for slot in slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle, no_restart=True)
        if self._started_ray:
            ray.shutdown()

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self._prober.start()

    def close(self, timeout: float = 10.0) -> list[Job]:
        """Stop taking jobs, cancel the running ones, wait for their final replies, stop the
        workers; returns the jobs that were still queued (now cancelled, for the caller)."""
        with self._cond:
            self._closed = True
            dropped = [job for slot in self.slots for job in slot.pending.clear()]
            for job in dropped:
                job.state, job.cancel_reason = CANCELLED, "the server is shutting down"
                job.cancel_event.set()
                self._keys.pop(job.id, None)
            running = [s.running for s in self.slots if s.running is not None]
            self._cond.notify_all()
        for job in running:
            self.cancel(job, "the server is shutting down")
        deadline = time.monotonic() + timeout
        for t in [*self._threads, self._prober]:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        self._kill(self.slots)
        return dropped

    @property
    def worker_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- the JobQueue interface ----------------------------------------------------------------
    def submit(self, job: Job) -> int:
        key = photo_key(job)  # hashed here, before the lock: the socket thread's only cost
        client = client_of(job)
        with self._cond:
            if self._closed:
                raise ProtocolError(BUSY, "the server is shutting down")
            waiting = sum(len(s.pending) for s in self.slots)
            # Each seat may queue max_queue jobs; together at least one per connection the
            # server admits, and max_queue per worker (the byte budget bounds their memory).
            lim = self.cfg.limits
            limit = max(lim.max_queue * len(self.slots), lim.max_connections)
            if waiting >= limit:
                raise ProtocolError(BUSY, f"{waiting} jobs are already waiting (limit {limit})")
            mine = sum(s.pending.count(client) for s in self.slots)
            if mine >= self.max_queue:
                raise ProtocolError(
                    BUSY,
                    f"{mine} jobs of this client are already waiting (limit {self.max_queue} "
                    "per client, so that every seat gets its turn)",
                )
            slot = self._route(key)
            self._keys[job.id] = key
            slot.pending.push(client, job)
            self._cond.notify_all()
            return self._position(slot, job)

    def cancel(self, job: Job, reason: str = "") -> str:
        with self._cond:
            if job.state == QUEUED:
                for slot in self.slots:
                    if slot.pending.remove(job):
                        break
                self._keys.pop(job.id, None)
                job.state, job.cancel_reason = CANCELLED, reason
                job.cancel_event.set()
                return CANCELLED
            if job.state != RUNNING:
                return job.state
            if not job.cancel_event.is_set():
                job.cancel_reason = reason
            job.cancel_event.set()
            slot = next((s for s in self.slots if s.running is job), None)
        if slot is not None:  # its dispatcher answers when the worker stops
            with contextlib.suppress(RayError):
                slot.handle.cancel.remote(job.id, job.cancel_reason)
        return "cancelling"

    def position(self, job: Job) -> int:
        with self._cond:
            for slot in self.slots:
                if job.state == QUEUED and job in slot.pending.order():
                    return self._position(slot, job)
            return 0

    def snapshot(self) -> tuple[Job | None, list[Job]]:
        with self._cond:
            running = [s.running for s in self.slots if s.running is not None]
            queued = [job for s in self.slots for job in s.pending.order()]
            return (running[0] if running else None), queued

    def workers(self) -> list[dict]:
        """For ``status``: each worker, its device, queue and sessions."""
        with self._cond:
            return [
                {
                    "name": s.name,
                    "up": s.up,
                    "device": s.info.get("device"),
                    "host": s.info.get("host"),
                    "queued": len(s.pending),
                    "running": s.running.kind if s.running is not None else None,
                    "done": s.info.get("done", 0),
                    "sessions": s.info.get("sessions", {}).get("entries", 0),
                    "models_loaded": s.info.get("models_loaded", []),
                }
                for s in self.slots
            ]

    def device_label(self) -> str:
        """hello's ``device``: the workers' device ("cuda" on a cluster of GPU workers);
        ``status`` lists each worker."""
        return ", ".join(sorted({str(s.info.get("device")) for s in self.slots}))

    # -- routing (under the lock) --------------------------------------------------------------
    def _live(self) -> list[str]:
        return [s.name for s in self.slots if s.up]

    def _route(self, key: str | None, avoid: str | None = None) -> Slot:
        live = [n for n in self._live() if n != avoid] or self._live() or list(self._by_name)
        if key is None:  # no photo: the least loaded worker
            return min(
                (self._by_name[n] for n in live),
                key=lambda s: len(s.pending) + (s.running is not None),
            )
        held = self._affinity.get(key)
        if held in live:
            return self._by_name[held]
        return self._by_name[self._ring.lookup(key, live)]

    def _position(self, slot: Slot, job: Job) -> int:
        return slot.pending.order().index(job) + (slot.running is not None)

    def _next(self, slot: Slot) -> Job | None:
        """This worker's next job; when it has none, a waiting job of a busy worker whose
        photo no worker holds or waits on (running it here loses no session)."""
        job = slot.pending.pop()
        if job is not None:
            return job
        for other in sorted(self.slots, key=lambda s: -len(s.pending)):
            if other is not slot:
                job = other.pending.pop(self._movable)
                if job is not None:
                    return job
        return None

    def _movable(self, job: Job) -> bool:
        key = self._keys.get(job.id)
        if key is None:
            return True
        if key in self._affinity:
            return False
        return sum(1 for k in self._keys.values() if k == key) == 1

    def _remember(self, key: str | None, slot: Slot) -> None:
        if key is None:
            return
        self._affinity[key] = slot.name
        self._affinity.move_to_end(key)
        while len(self._affinity) > AFFINITY_KEYS:
            self._affinity.popitem(last=False)

    def _mark_down(self, slot: Slot) -> None:
        """A worker died: its keys and its waiting jobs go to the live workers."""
        if not slot.up:
            return
        slot.up = False
        for key in [k for k, n in self._affinity.items() if n == slot.name]:
            del self._affinity[key]
        if not self._live():
            return  # its jobs wait for it (or another) to come back
        moved = slot.pending.clear()
        for job in moved:
            self._route(self._keys.get(job.id), avoid=slot.name).pending.push(client_of(job), job)
        self.log(f"cluster: worker {slot.name} is down; {len(moved)} waiting jobs moved")
        self._cond.notify_all()

    # -- the dispatcher threads ----------------------------------------------------------------
    def _loop(self, slot: Slot) -> None:
        try:
            while True:
                with self._cond:
                    job = None
                    while not self._closed:
                        job = self._next(slot) if slot.up else None
                        if job is not None:
                            break
                        self._cond.wait(PROBE_EVERY_S)
                    if job is None:
                        return
                    job.state = RUNNING
                    slot.running = job
                    key = self._keys.get(job.id)
                    self._remember(key, slot)
                    attempt = self._attempts.get(job.id, 0) + 1
                    self._attempts[job.id] = attempt
                    silent = time.monotonic() - job.last_seen
                    stale = self.stale_after_s is not None and silent > self.stale_after_s
                    if stale and attempt == 1:
                        job.cancel_reason = f"no heartbeat from the client for {silent:.1f} s"
                        job.cancel_event.set()
                try:
                    if job.is_cancelled() and attempt == 1:
                        msg = f"{job.cancel_reason or 'cancelled'} (cancelled before it started)"
                        self._end(job, error_header("cancelled", msg, job.request.id, job.id), [])
                    else:
                        self._run(slot, job, attempt)
                finally:
                    with self._cond:
                        slot.running = None
                        self._cond.notify_all()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _run(self, slot: Slot, job: Job, attempt: int) -> None:
        """Stream one job's replies from its worker; on the worker's death, queue it once
        more elsewhere (or answer it when it was cancelled or already ran twice)."""
        try:
            stream = slot.handle.run.options(num_returns="streaming").remote(job.id, job.request)
            for ref in stream:
                header, frames = ray.get(ref)
                if is_final(header):
                    self._end(job, header, frames)
                    return
                job.progress = {k: header.get(k) for k in ("stage", "step", "total", "psnr_keep")}
                self.emit(job, header, frames)
            lost = f"worker {slot.name} ended the job without a final reply"
        except RayActorError as e:
            lost = f"worker {slot.name} stopped ({type(e).__name__})"
        except RayError as e:
            self.log(f"{job.kind} {job.id}: {e}")
            msg = f"the cluster failed to run the job: {type(e).__name__}"
            self._end(job, error_header(INTERNAL, msg, job.request.id, job.id), [])
            return
        with contextlib.suppress(RayError):  # only unreachable, maybe still at it: stop it
            slot.handle.cancel.remote(job.id, "it runs on another worker")
        with self._cond:
            self._mark_down(slot)
            if job.is_cancelled() or attempt >= ATTEMPTS or self._closed:
                final = None
            else:
                job.state = QUEUED
                self._route(self._keys.get(job.id), avoid=slot.name).pending.push(
                    client_of(job), job, first=True
                )
                self._cond.notify_all()
                self.log(f"{job.kind} {job.id}: {lost}; running it again on another worker")
                return
        if job.is_cancelled():
            final = error_header("cancelled", job.cancel_reason, job.request.id, job.id)
        else:
            final = error_header(INTERNAL, f"{lost}, twice", job.request.id, job.id)
        self._end(job, final, [])

    def _end(self, job: Job, header: dict, frames: Sequence[bytes]) -> None:
        if header.get("kind") == "result":
            job.state = DONE
        else:
            code = header.get("error", {}).get("code")
            job.state = CANCELLED if code == "cancelled" else FAILED
        with self._cond:
            self._keys.pop(job.id, None)
            self._attempts.pop(job.id, None)
        self.emit(job, header, frames)

    # -- probes --------------------------------------------------------------------------------
    def _probe_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
            for slot in self.slots:
                try:
                    info = ray.get(slot.handle.info.remote(), timeout=PROBE_TIMEOUT_S)
                except (GetTimeoutError, RayError):
                    with self._cond:
                        if slot.running is None:  # a running job's stream reports it itself
                            self._mark_down(slot)
                    continue
                with self._cond:
                    slot.info = info
                    if not slot.up:
                        slot.up = True
                        self.log(f"cluster: worker {slot.name} is up again; its keys return")
                        self._cond.notify_all()
            time.sleep(PROBE_EVERY_S)
