"""Progress reports and cancellation for slow steps (inversion, G′ adaptation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class Cancelled(Exception):
    """Raised inside an optimisation loop when the caller's cancel flag is set."""


@dataclass
class Progress:
    stage: str  # "invert" | "adapt" | "sample"
    step: int
    total: int
    psnr_keep: float | None = None
    eta_s: float | None = None


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]  # e.g. threading.Event().is_set


class Reporter:
    """Checks the cancel flag every step and reports progress every ``every`` steps."""

    def __init__(
        self,
        stage: str,
        total: int,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        every: int = 10,
    ):
        self.stage, self.total, self.every = stage, total, max(1, every)
        self.progress, self.cancel = progress, cancel
        self.t0 = time.perf_counter()

    def step(self, i: int, psnr: float | None = None) -> None:
        """Call after step i (0-based) finished; raises Cancelled when asked to stop."""
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"{self.stage} cancelled at step {i + 1}/{self.total}")
        done = i + 1
        if self.progress is not None and (done % self.every == 0 or done == self.total):
            rate = (time.perf_counter() - self.t0) / done
            self.progress(Progress(self.stage, done, self.total, psnr, rate * (self.total - done)))

    def wants_psnr(self, i: int) -> bool:
        """Whether step i will be reported (PSNR is only computed then: it costs a sync)."""
        return self.progress is not None and ((i + 1) % self.every == 0 or i + 1 == self.total)
