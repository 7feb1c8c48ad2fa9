"""The server's view of ganpaint.core.concepts: list, resolve a name, learn, discover.

Every ConceptError leaves here as a ProtocolError with the right code: an unknown name is
``unknown_concept``, anything else the client asked for that cannot be done (a name that
exists already, a selection where no unit fires) is ``bad_request``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganpaint.core.concepts import ConceptError, ConceptLibrary
from ganpaint.core.edit import Presence
from ganpaint.core.progress import CancelFn, ProgressFn

from .protocol import BAD_REQUEST, UNKNOWN_CONCEPT, ProtocolError

Log = Callable[[str], None]


@dataclass
class DiscoverSpec:
    groups: int = 12
    samples: int = 512
    seed: int = 0
    prefix: str = "group"
    save: bool = False
    replace: bool = False
    sheet: bool = False


def _library(model_id: str, generator: Any = None, log: Log | None = None) -> ConceptLibrary:
    return ConceptLibrary(model_id, generator=generator, on_problem=log)


def _bad(e: ConceptError) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, _one_line(e))


def list_concepts(model_id: str, log: Log | None = None, include_all: bool = False) -> list[dict]:
    """[{"name", "source", "origin", "layer", "units", "ops", "hidden", ...}] of one model's
    visible concepts; unnamed (``hidden``) ones only with ``include_all``. ``ops`` is always
    there: the operations that do what the name says."""
    try:
        lib = _library(model_id, log=log)
        user = {c.name for c in lib.user_concepts()}
        return [
            {
                **c.to_dict(),
                "ops": list(c.ops),
                "hidden": c.hidden,
                "origin": "user" if c.name in user else "built-in",
            }
            for c in lib.list()
            if include_all or not c.hidden
        ]
    except ConceptError as e:
        raise _bad(e) from e


def check_exists(model_id: str, name: str) -> None:
    """unknown_concept now, before the job is queued, rather than after the wait."""
    try:
        _library(model_id).get(name)
    except ConceptError as e:
        raise ProtocolError(UNKNOWN_CONCEPT, _one_line(e)) from e


def check_new_name(model_id: str, name: str, replace: bool) -> None:
    try:
        names = _library(model_id).names()
    except ConceptError as e:
        raise _bad(e) from e
    if name in names and not replace:
        raise ProtocolError(
            BAD_REQUEST,
            f"concept {name!r} already exists for {model_id}; choose another name or "
            "ask to replace it",
        )


@dataclass
class ResolvedConcept:
    units: list[int]
    values: list[float] | None
    layer: str
    strength: str | int  # the brush used (the request's, else the concept's default)
    presence: Presence | None = None  # where a remove acts (core.edit.remove_where_present)


def resolve(
    gen,
    name: str,
    strength: str | None,
    log: Log | None = None,
    leave_out: list[int] | tuple[int, ...] = (),
) -> ResolvedConcept:
    """The brush of a concept: its top units for a strength (None = the concept's default),
    skipping ``leave_out``, with "on" values (the published table where the reference ships
    one, else the generator's cached quantiles)."""
    check_exists(gen.model_id, name)  # unknown_concept; what follows is bad_request
    try:
        # With the generator, get() checks the layer, units and values against the model.
        concept = _library(gen.model_id, generator=gen, log=log).get(name)
        if concept.layer != gen.edit_layer:
            raise ConceptError(
                f"concept {name!r} is for layer {concept.layer}; {gen.model_id} edits at "
                f"layer {gen.edit_layer}"
            )
        units, values = concept.top(strength, leave_out=leave_out)
    except ConceptError as e:
        raise _bad(e) from e
    return ResolvedConcept(units, values, concept.layer, concept.brush(strength), concept.presence)


def learn(
    gen,
    photo: np.ndarray,
    mask: np.ndarray,
    name: str,
    replace: bool,
    cfg,
    progress: ProgressFn,
    cancel: CancelFn,
    cache: MutableMapping,
    log: Log | None = None,
) -> dict:
    """Learn a concept from the selection and save it to the model's library."""
    from ganpaint.core.concepts.learn import learn_concept

    try:
        concept = learn_concept(
            gen, photo, mask, name, cfg, progress=progress, cancel=cancel, cache=cache
        )
        _library(gen.model_id, log=log).add(concept, replace=replace)
    except ConceptError as e:
        raise _bad(e) from e
    return concept.to_dict()


def discover(
    gen, spec: DiscoverSpec, progress: ProgressFn, cancel: CancelFn, log: Log | None = None
) -> tuple[list[dict], np.ndarray | None]:
    """Group the edit layer's units into concepts; optionally save them and draw the
    contact sheet ([H, W, 3] uint8) a person names them from."""
    from ganpaint.core.concepts.discover import contact_sheet, sample_activations
    from ganpaint.core.concepts.discover import discover as group

    try:
        acts = sample_activations(
            gen, spec.samples, gen.edit_index, spec.seed, progress=progress, cancel=cancel
        )
        found = group(gen, spec.groups, spec.samples, seed=spec.seed, acts=acts)
        found.names = [f"{spec.prefix}-{i + 1:02d}" for i in range(len(found.groups))]
        concepts = found.concepts(gen.model_id)
        if spec.save:
            lib = _library(gen.model_id, log=log)
            clash = sorted({c.name for c in concepts} & set(lib.names()))
            if clash and not spec.replace:
                raise ConceptError(
                    f"concepts already exist: {', '.join(clash)}; ask to replace them or "
                    "choose another prefix"
                )
            for c in concepts:
                lib.add(c, replace=True)
    except ConceptError as e:
        raise _bad(e) from e
    sheet = None
    if spec.sheet:
        from PIL import Image

        with tempfile.TemporaryDirectory(prefix="ganpaint-sheet-") as tmp:
            path = contact_sheet(gen, found, Path(tmp) / "sheet.png", acts=acts)
            with Image.open(path) as im:
                sheet = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return [c.to_dict() for c in concepts], sheet


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
