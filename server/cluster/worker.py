"""One worker of a cluster: a device, its models and its sessions, running one job at a time.

``ClusterWorker`` is a plain class; the front makes it a Ray actor (front.py). It runs the
single server's JobRunner unchanged, so a job gives the same replies and the same result on
a worker as on the single server. ``run`` streams a job's replies back as they come (a Ray
streaming generator): every ``progress``, then the final ``result`` or ``error``.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch

from ganpaint.core.generators import resolve_device

from .. import concept_store
from ..config import ServerConfig
from ..jobs import Job, Owner
from ..model_pool import ModelPool
from ..requests import JobRequest
from ..runner import JobRunner
from ..sessions import SessionCache

EARLY_CANCELS = 256  # cancels that arrived before their job, remembered until it comes

Reply = tuple[dict, list[bytes]]


def is_final(header: dict) -> bool:
    return header.get("kind") in ("result", "error")


class ClusterWorker:
    def __init__(self, cfg: ServerConfig, name: str, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self.device = resolve_device(cfg.device)
        self.pool = ModelPool(self.device, cfg.download, cfg.checkpoints)
        self.sessions = SessionCache(cfg.session_budget_bytes)
        self.concepts = concept_store.ConceptIndex(self._log)
        self.runner = JobRunner(cfg, self.pool, self.sessions, self._emit, self._log, self.concepts)
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[Job, queue.Queue]] = {}
        self._early: OrderedDict[str, str] = OrderedDict()  # job id -> cancel reason
        self._done = 0

    def _log(self, line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.name}: {line}", file=sys.stderr, flush=True)

    def info(self) -> dict:
        """What ``status`` shows of this worker (also the front's liveness probe)."""
        with self._lock:
            running = [job.kind for job, _ in self._jobs.values()]
            done = self._done
        return {
            "name": self.name,
            "device": str(self.device),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "running": running[0] if running else None,
            "done": done,
            "sessions": self.sessions.stats(),
            "models_loaded": self.pool.loaded(),
        }

    def run(self, job_id: str, request: JobRequest) -> Iterator[Reply]:
        """Run one job; yields (header, frames) for each reply, the final one last."""
        job = Job(job_id, request, Owner(b""))
        replies: queue.Queue = queue.Queue()
        with self._lock:
            early = self._early.pop(job_id, None)
            self._jobs[job_id] = (job, replies)
        if early is not None:
            job.cancel_reason = early
            job.cancel_event.set()
        thread = threading.Thread(target=self.runner, args=(job,), name=f"job-{job_id}")
        thread.start()
        try:
            while True:
                header, frames = replies.get()
                yield header, frames
                if is_final(header):
                    return
        finally:
            job.cancel_event.set()  # the front stopped listening: stop the work too
            thread.join()
            with self._lock:
                self._jobs.pop(job_id, None)
                self._done += 1

    def cancel(self, job_id: str, reason: str) -> None:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:  # its run has not arrived yet (calls may overtake each other)
                self._early[job_id] = reason
                while len(self._early) > EARLY_CANCELS:
                    self._early.popitem(last=False)
                return
        job = entry[0]
        if not job.cancel_event.is_set():
            job.cancel_reason = reason
        job.cancel_event.set()

    def _emit(self, job: Job, header: dict, frames: Sequence[bytes]) -> None:
        with self._lock:
            entry = self._jobs.get(job.id)
        if entry is not None:
            entry[1].put((header, [bytes(f) for f in frames]))
