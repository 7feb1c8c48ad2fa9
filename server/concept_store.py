"""The server's view of ganpaint.core.concepts: list, check a name, learn, discover.

Each model's library is parsed once and again only when its user file changes (inode, size,
mtime): a ``ConceptIndex`` keeps one long-lived ``ConceptLibrary`` per model and a
``Listing`` of what it held when last read. The socket thread only asks ``current()`` (one
stat of the file) and answers from that listing; parsing happens on the loader or worker
thread (``load()``), so a large library never stalls other clients.

Every ConceptError leaves here as a ProtocolError with the right code: an unknown name is
``unknown_concept``, anything else the client asked for that cannot be done (a name that
exists already, a selection where no unit fires) is ``bad_request``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganpaint.core.concepts import Concept, ConceptError, ConceptLibrary
from ganpaint.core.errors import one_line
from ganpaint.core.progress import CancelFn, ProgressFn

from .protocol import BAD_REQUEST, UNKNOWN_CONCEPT, ProtocolError

Log = Callable[[str], None]
Signature = tuple[int, int, int] | None  # the user file's (inode, size, mtime ns); None: none


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Listing:
    """One model's visible concepts as last read, ready to answer from."""

    model: str
    signature: Signature
    by_name: dict[str, Concept]
    entries: list[tuple[bool, dict]]  # (hidden, the `concepts` reply's map), in order

    def concepts(self, include_all: bool = False) -> list[dict]:
        return [d for hidden, d in self.entries if include_all or not hidden]

    def check_exists(self, name: str) -> Concept:
        """unknown_concept now, before the job is queued, rather than after the wait."""
        concept = self.by_name.get(name)
        if concept is None:
            known = list(self.by_name)
            more = f" and {len(known) - 20} more" if len(known) > 20 else ""
            raise ProtocolError(
                UNKNOWN_CONCEPT,
                f"unknown concept {name!r} for {self.model}; known: "
                f"{', '.join(known[:20]) or 'none'}{more}",
            )
        return concept

    def check_new_name(self, name: str, replace: bool) -> None:
        if name in self.by_name and not replace:
            raise ProtocolError(
                BAD_REQUEST,
                f"concept {name!r} already exists for {self.model}; choose another name or "
                "ask to replace it",
            )


class ConceptIndex:
    """Thread-safe: the socket thread calls ``current``; other threads ``load`` and
    ``library``."""

    def __init__(self, log: Log | None = None):
        self.log = log
        self._libraries: dict[str, ConceptLibrary] = {}
        self._listings: dict[str, Listing] = {}
        self._lock = threading.Lock()  # one reload at a time

    def library(self, model_id: str) -> ConceptLibrary:
        lib = self._libraries.get(model_id)
        if lib is None:
            try:
                lib = ConceptLibrary(model_id, on_problem=self.log)
            except ConceptError as e:
                raise _bad(e) from e
            lib = self._libraries.setdefault(model_id, lib)
        return lib

    def current(self, model_id: str) -> Listing | None:
        """The listing if the library has not changed since it was read, else None. Never
        parses: the socket thread's call."""
        listing = self._listings.get(model_id)
        if listing is None or _signature(self.library(model_id).user_path) != listing.signature:
            return None
        return listing

    def load(self, model_id: str) -> Listing:
        """The current listing, reading the library again if it changed (slow for a large
        one: never on the socket thread)."""
        with self._lock:
            listing = self.current(model_id)
            if listing is not None:
                return listing
            lib = self.library(model_id)
            sig = _signature(lib.user_path)  # before reading: a later change reads again
            try:
                user = {c.name for c in lib.user_concepts()}
                visible = lib.list()
            except ConceptError as e:
                raise _bad(e) from e
            entries = [
                (
                    c.hidden,
                    {
                        **c.to_dict(),
                        "ops": list(c.ops),
                        "hidden": c.hidden,
                        "origin": "user" if c.name in user else "built-in",
                    },
                )
                for c in visible
            ]
            listing = Listing(model_id, sig, {c.name: c for c in visible}, entries)
            self._listings[model_id] = listing
            return listing


@dataclass
class DiscoverSpec:
    groups: int = 12
    samples: int = 512
    seed: int = 0
    prefix: str = "group"
    save: bool = False
    replace: bool = False
    sheet: bool = False


def _bad(e: ConceptError) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, one_line(e))


def list_concepts(model_id: str, log: Log | None = None, include_all: bool = False) -> list[dict]:
    """[{"name", "source", "origin", "layer", "units", "ops", "hidden", ...}] of one model's
    visible concepts; unnamed (``hidden``) ones only with ``include_all``. ``ops`` is always
    there: the operations that do what the name says."""
    return ConceptIndex(log).load(model_id).concepts(include_all)


def learn(
    index: ConceptIndex,
    gen,
    photo: np.ndarray,
    mask: np.ndarray,
    name: str,
    replace: bool,
    cfg,
    progress: ProgressFn,
    cancel: CancelFn,
    cache: MutableMapping,
) -> dict:
    """Learn a concept from the selection and save it to the model's library."""
    from ganpaint.core.concepts.learn import learn_concept

    try:
        concept = learn_concept(
            gen, photo, mask, name, cfg, progress=progress, cancel=cancel, cache=cache
        )
        index.library(gen.model_id).add(concept, replace=replace)
    except ConceptError as e:
        raise _bad(e) from e
    return concept.to_dict()


def discover(
    index: ConceptIndex, gen, spec: DiscoverSpec, progress: ProgressFn, cancel: CancelFn
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
            lib = index.library(gen.model_id)
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
