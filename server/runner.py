"""One job on the worker thread: load the model, run the pipeline, answer with one final reply.

Every exception ends as an error reply with a stable code; progress goes out every few steps
(at most ~10 a second); the job's cancel flag is the pipeline's cancel callable, so a cancel
takes effect within one optimisation step.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ganpaint.core.concepts import ConceptError
from ganpaint.core.encoder import model_encoder
from ganpaint.core.errors import one_line
from ganpaint.core.generators.base import ModelError
from ganpaint.core.photo import PhotoError
from ganpaint.core.pipeline import (
    GuardedCache,
    PhotoResult,
    PipelineConfig,
    WouldReplace,
    edit_photo,
    fit_settings,
    prepare,
    reconstruct_photo,
)
from ganpaint.core.progress import Cancelled, Progress
from ganpaint.core.resolve import EditError, resolve_edit

from . import concept_store
from .config import ServerConfig
from .images import from_array
from .jobs import CANCELLED, DONE, FAILED, Job
from .memory import release_freed_memory
from .model_pool import ModelPool
from .protocol import (
    BAD_REQUEST,
    INTERNAL,
    TOO_LARGE,
    UNKNOWN_MODEL,
    WOULD_REPLACE,
    ProtocolError,
    error_header,
    reply_header,
)
from .requests import JobRequest
from .sessions import ScopedSessions, SessionCache

# emit(job, header, frames): send one reply for a job (the socket thread routes it).
Emit = Callable[[Job, dict, Sequence[bytes]], None]
PROGRESS_EVERY_S = 0.1


@dataclass
class Outcome:
    """What the job log line and the final reply are made of."""

    header: dict = field(default_factory=dict)
    frames: list[bytes | memoryview] = field(default_factory=list)


def check_finite(res: PhotoResult, guard: GuardedCache) -> None:
    """A result whose loss or image is not finite is an error, and nothing of it is kept."""
    if res.is_finite():
        return
    guard.rollback()
    raise ProtocolError(
        INTERNAL,
        "the fit diverged (non-finite values); nothing was kept and the photo's session "
        "is unchanged",
    )


class JobRunner:
    def __init__(
        self,
        cfg: ServerConfig,
        pool: ModelPool,
        sessions: SessionCache,
        emit: Emit,
        log: Callable[[str], None],
        concepts: concept_store.ConceptIndex,
    ):
        self.cfg, self.pool, self.sessions = cfg, pool, sessions
        self.emit, self.log, self.concepts = emit, log, concepts
        self._encoders: dict[str, object] = {}  # model id → its shipped encoder (or None)

    def __call__(self, job: Job) -> None:
        req = job.request
        t0 = time.perf_counter()
        frames: list[bytes | memoryview] = []
        try:
            if job.is_cancelled():
                raise Cancelled("cancelled before it started")
            outcome = self._run(job)
            header = reply_header("result", req.id, job=job.id, job_kind=req.kind, **outcome.header)
            frames = outcome.frames
            job.state = DONE
            self.log(self._log_line(job, time.perf_counter() - t0, outcome.header))
        except Exception as e:
            code, message = self._classify(job, e)
            header = error_header(code, message, req.id, job.id)
            job.state = CANCELLED if code == "cancelled" else FAILED
            self.log(
                f"{req.kind} {job.id} {req.describe()} {code} after "
                f"{time.perf_counter() - t0:.1f} s: {message}"
            )
        finally:
            self.sessions.trim()
            release_freed_memory()
        self.emit(job, header, frames)

    # -- the work ----------------------------------------------------------------------------
    def _run(self, job: Job) -> Outcome:
        req = job.request
        model_id = req.model or self.cfg.model
        self._progress(job)(Progress("load", 0, 1))
        gen = self.pool.get(model_id)
        if req.kind == "reconstruct":
            return self._reconstruct(job, gen, model_id)
        if req.kind == "edit":
            return self._edit(job, gen, model_id)
        if req.kind == "prepare":
            return self._prepare(job, gen, model_id)
        if req.kind == "learn_concept":
            info = concept_store.learn(
                self.concepts,
                gen,
                req.image,
                req.mask,
                req.name,
                req.replace,
                self._pipeline_config(req, gen),
                self._progress(job),
                job.is_cancelled,
                ScopedSessions(self.sessions, req.scope),
            )
            return Outcome({**info, "model": model_id})
        if req.kind == "discover":
            found, sheet = concept_store.discover(
                self.concepts, gen, req.discover, self._progress(job), job.is_cancelled
            )
            out = Outcome({"model": model_id, "concepts": found, "saved": req.discover.save})
            if sheet is not None:
                meta, data = from_array(sheet)
                out.header["image"] = meta.to_dict()
                out.frames.append(data)
            return out
        raise ProtocolError(BAD_REQUEST, f"unknown job kind {req.kind!r}")

    def _pipeline_config(self, req: JobRequest, gen) -> PipelineConfig:
        if gen.model_id not in self._encoders:
            self._encoders[gen.model_id] = model_encoder(gen)
        cfg = fit_settings(
            req.quality or self.cfg.quality,
            req.steps or self.cfg.steps,
            self._encoders[gen.model_id],
            self.cfg.invert_steps,
            self.cfg.invert_precision,
        )
        cfg.confirm_replaced = req.confirm_replaced
        return cfg

    def _reconstruct(self, job: Job, gen, model_id: str) -> Outcome:
        req = job.request
        guard = GuardedCache(ScopedSessions(self.sessions, req.scope))
        res = reconstruct_photo(
            gen,
            req.image,
            self._pipeline_config(req, gen),
            self._progress(job),
            job.is_cancelled,
            guard,
        )
        check_finite(res, guard)
        return self._image_outcome(req, res, model_id)

    def _edit(self, job: Job, gen, model_id: str) -> Outcome:
        req = job.request
        cfg = self._pipeline_config(req, gen)
        library = None
        if req.concept is not None:  # unknown_concept before anything else
            self.concepts.load(gen.model_id).check_exists(req.concept)
            library = self.concepts.library(gen.model_id)
        spec = resolve_edit(
            gen,
            req.op,
            units=None if req.concept is not None else req.units,
            concept=req.concept,
            strength=req.strength,
            leave_out=req.leave_out,
            remove_all=req.remove_all,
            library=library,
            samples=cfg.quantile_samples,
        )
        extra = {"units": list(spec.units)}
        if spec.concept is not None:
            extra.update(concept=req.concept, strength=spec.strength)
        guard = GuardedCache(ScopedSessions(self.sessions, req.scope))
        res = edit_photo(
            gen,
            req.image,
            req.mask,
            spec,
            cfg,
            self._progress(job),
            job.is_cancelled,
            guard,
        )
        check_finite(res, guard)
        out = self._image_outcome(req, res, model_id)
        out.header.update(op=req.op, **extra)
        return out

    def _prepare(self, job: Job, gen, model_id: str) -> Outcome:
        """Invert the selection's region into its session, ahead of the edit (the plug-in
        asks while its dialog is open): the edit that follows finds the inversion done."""
        req, t0 = job.request, time.perf_counter()
        guard = GuardedCache(ScopedSessions(self.sessions, req.scope))
        cfg = self._pipeline_config(req, gen)
        prep = prepare(gen, req.image, req.mask, cfg, self._progress(job), job.is_cancelled, guard)
        inv = prep.session.inversion
        if not math.isfinite(float(inv.psnr)):
            guard.rollback()
            raise ProtocolError(INTERNAL, "the inversion diverged (non-finite values)")
        return Outcome(
            {
                "model": model_id,
                "steps": int(inv.steps),
                "psnr_inversion": float(inv.psnr),
                "session_reused": bool(prep.reused),
                "seconds": time.perf_counter() - t0,
            }
        )

    def _image_outcome(self, req: JobRequest, res, model_id: str) -> Outcome:
        if res.image.shape != req.image.shape or res.image.dtype != req.image.dtype:
            raise RuntimeError(
                f"pipeline returned {res.image.shape} {res.image.dtype} for "
                f"{req.image.shape} {req.image.dtype}"
            )
        meta, data = from_array(res.image)
        header = {
            "model": model_id,
            "quality": req.quality or self.cfg.quality,
            "steps": int(res.steps),
            "seconds": float(res.seconds),
            "psnr_keep": float(res.psnr_keep),
            "psnr_inversion": float(res.psnr_inversion),
            "session_reused": bool(res.session_reused),
            # At the photo's resolution, inside the selection (core/metrics.photo_metrics);
            # null where a figure is undefined (no kept pixels, a bit-identical result).
            "metrics": {
                k: float(v) if math.isfinite(float(v)) else None for k, v in res.metrics.items()
            },
            "image": meta.to_dict(),
        }
        return Outcome(header, [data])

    # -- progress and errors -----------------------------------------------------------------
    def _progress(self, job: Job):
        last = {"t": 0.0, "stage": None}

        def report(p: Progress) -> None:
            now = time.monotonic()
            info = {
                "stage": p.stage,
                "step": int(p.step),
                "total": int(p.total),
                "psnr_keep": None if p.psnr_keep is None else float(p.psnr_keep),
                "eta_s": None if p.eta_s is None else round(float(p.eta_s), 2),
            }
            job.progress = info
            final = p.step >= p.total
            if now - last["t"] < PROGRESS_EVERY_S and p.stage == last["stage"] and not final:
                return
            last["t"], last["stage"] = now, p.stage
            self.emit(job, reply_header("progress", job.request.id, job=job.id, **info), [])

        return report

    def _classify(self, job: Job, e: Exception) -> tuple[str, str]:
        if isinstance(e, Cancelled):
            # The core's message says where it stopped ("adapt cancelled at step 57/5000").
            where = str(e).strip()
            reason = job.cancel_reason or "cancelled"
            return "cancelled", f"{reason} ({where})" if where else reason
        if isinstance(e, ProtocolError):
            return e.code, e.message
        if isinstance(e, WouldReplace):
            return WOULD_REPLACE, one_line(e)
        if isinstance(e, (PhotoError, ConceptError, EditError)):
            return BAD_REQUEST, one_line(e)
        if isinstance(e, ModelError):
            return UNKNOWN_MODEL, one_line(e)
        if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
            return TOO_LARGE, "out of memory for this image; try a smaller one"
        self.log(f"{job.kind} {job.id} internal error:\n{traceback.format_exc().rstrip()}")
        return INTERNAL, one_line(e)

    def _log_line(self, job: Job, seconds: float, h: dict) -> str:
        req = job.request
        parts = [req.kind, job.id, req.describe(), f"model={h.get('model')}"]
        if "steps" in h:
            parts.append(f"steps={h['steps']}")
        if h.get("quality", "faithful") != "faithful":
            parts.append(f"quality={h['quality']}")
        parts.append(f"{seconds:.1f} s")
        if "psnr_keep" in h:
            parts.append(f"psnr_keep={h['psnr_keep']:.2f} dB")
        if "session_reused" in h:
            parts.append("session=reused" if h["session_reused"] else "session=new")
        return " ".join(parts)
