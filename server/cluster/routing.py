"""Where a job should run: the key of the photo whose session it uses, and who a client is.

A session lives in the worker that built it (core/pipeline.py keys it by model and the exact
crop the inversion sees; sessions.py scopes it to its client). The front cannot compute that
key without the model, so it routes by a coarser one: the client's scope, the model and the
whole photo. Every job on one photo of one client goes to one worker, which holds the
sessions of all that photo's regions. A collision only costs a session rebuild elsewhere,
never a wrong result: any worker rebuilds any session from the request.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..jobs import Job

SAMPLE_BYTES = 1 << 20  # a large photo is hashed from this many bytes spread over all of it


def photo_key(job: Job) -> str | None:
    """The routing key of a job's photo; None for jobs without one (``discover``)."""
    req = job.request
    if req.image is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{req.scope}\0{req.model}\0{req.image.shape}\0{req.image.dtype}\0".encode())
    flat = np.ascontiguousarray(req.image).reshape(-1).view(np.uint8)
    stride = max(1, flat.size // SAMPLE_BYTES)
    h.update(np.ascontiguousarray(flat[::stride]).data)
    return h.hexdigest()


def client_of(job: Job) -> str:
    """The seat a job comes from, for taking turns: its CURVE key, else its session secret
    (shared by the plug-in's connections), else its connection."""
    owner = job.owner
    if owner.key:
        return f"key:{owner.key}"
    if job.request.session:
        return f"session:{job.request.session}"
    return f"connection:{owner.identity.hex()}"
