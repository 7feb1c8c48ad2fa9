"""The concept library of one model: built-ins shipped as data + the user's own concepts.

Built-ins: ``core/concepts/data/<model>.json`` (read-only package data). User concepts:
``<data_dir>/concepts/<model>.json`` (``paths.data_dir()``, ``$GANPAINT_DATA`` overrides),
one file per model, in the same format::

    {"format": "ganpaint-concepts", "version": 1, "model": "<id>",
     "concepts": [{...Concept.to_dict()...}, ...], "hidden": ["<built-in name>", ...]}

Rules:
- A user concept shadows a built-in of the same name. Deleting or renaming a name that a
  built-in has hides that built-in (``hidden``); ``restore`` brings it back.
- Every change is read-modify-write under an exclusive lock, written atomically (temp file
  in the same folder, fsync, ``os.replace``; see files.py): a crash leaves the old file.
- A user file that does not parse or does not validate is reported (``problems`` and the
  ``on_problem`` callback) and moved aside to ``<file>.corrupt-<UTC timestamp>``, never
  overwritten; the library then carries on with the built-ins.
- Every failure is a ``ConceptError`` with a one-line message.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import one_line
from .files import (
    atomic_write_json,
    atomic_write_text,
    dumps,
    locked,
    parse_json,
    read_bounded,
    remove_stale_temps,
    signature,
)
from .record import Concept, ConceptError, check_name

__all__ = ["Concept", "ConceptError", "ConceptLibrary", "builtin_dir", "user_dir"]

FORMAT = "ganpaint-concepts"
VERSION = 1
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
# Bounds of one model's user library and of a file to import: a listing of it travels to
# every client that asks, so it stays a size a menu and a socket can carry.
MAX_CONCEPTS = 20_000
MAX_FILE_BYTES = 128 * 1024 * 1024
log = logging.getLogger("ganpaint.concepts")


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent / "data"


def user_dir() -> Path:
    from ..paths import data_dir

    return data_dir() / "concepts"


_user_dir, _builtin_dir = user_dir, builtin_dir


def _default_model() -> str:
    from ..generators.registry import DEFAULT_MODEL

    return DEFAULT_MODEL


class ConceptLibrary:
    """Concepts of one model. Concepts stored without "on" values get the model's published
    table where the reference ships one (ProGAN churchoutdoor layer4); otherwise
    ``generator`` (optional, the loaded model) lets ``get`` and ``list`` fill them in from
    the cached 0.99 quantiles of that generator's units."""

    def __init__(
        self,
        model_id: str | None = None,
        user_dir: Path | None = None,
        builtin_dir: Path | None = None,
        generator: Any = None,
        on_problem: Callable[[str], None] | None = None,
    ):
        model_id = model_id or _default_model()
        if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id):
            raise ConceptError(f"bad model id {model_id!r}")
        if generator is not None and getattr(generator, "model_id", model_id) != model_id:
            raise ConceptError(
                f"library of {model_id!r} given a generator of {generator.model_id!r}"
            )
        self.model_id = model_id
        self.user_path = Path(user_dir or _user_dir()) / f"{model_id}.json"
        self.builtin_path = Path(builtin_dir or _builtin_dir()) / f"{model_id}.json"
        self.generator = generator
        self.on_problem = on_problem
        self.problems: list[str] = []
        self._builtins: list[Concept] | None = None
        # (signature, concepts, hidden) of the user file as last parsed: read again only
        # when the file changed, so a long-lived library parses a large file once.
        self._user_cache: tuple[tuple[int, int, int], list[Concept], list[str]] | None = None

    # -- reading -----------------------------------------------------------------------
    def builtins(self) -> list[Concept]:
        """The shipped concepts of this model (all of them, hidden ones too)."""
        if self._builtins is None:
            if not self.builtin_path.exists():
                self._builtins = []
            else:
                try:
                    data = parse_json(self.builtin_path.read_bytes())
                    self._builtins = _parse(data, self.model_id)[0]
                except (ValueError, ConceptError) as e:
                    raise ConceptError(
                        f"built-in concepts {self.builtin_path} are broken "
                        f"(reinstall ganpaint): {one_line(e)}"
                    ) from None
        return list(self._builtins)

    def _read_user(self, held: bool = False) -> tuple[list[Concept], list[str]]:
        """(concepts, hidden) of the user file; a corrupt file is moved aside and reported.

        ``held``: the caller holds the file's lock already (the lock is not re-entrant).
        """
        path = self.user_path
        try:
            with open(path, "rb") as f:
                sig = signature(f)
                cache = self._user_cache
                if cache is not None and cache[0] == sig:
                    return list(cache[1]), list(cache[2])
                raw = read_bounded(f, MAX_FILE_BYTES)
        except FileNotFoundError:
            return [], []
        except OSError as e:
            raise ConceptError(f"cannot read {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise ConceptError(f"concept library {path} is too large: {e}") from None
        try:
            concepts, hidden = _parse(parse_json(raw.decode("utf-8")), self.model_id)
            self._user_cache = (sig, concepts, hidden)
            return list(concepts), list(hidden)
        except _NewerFormat as e:
            raise ConceptError(str(e)) from None
        except (ValueError, ConceptError) as e:  # JSONDecodeError and UnicodeError too
            if held:
                return self._set_aside(path, raw, one_line(e))
            with locked(path):
                return self._set_aside(path, raw, one_line(e))

    def _set_aside(self, path: Path, raw: bytes, reason: str) -> tuple[list, list]:
        """Move the corrupt file aside; call under the lock."""
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current != raw:  # another process replaced it meanwhile: read that one
            return self._read_user(held=True) if current is not None else ([], [])
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(path, aside)
        self._problem(f"concept file {path} is corrupt ({reason}); kept it as {aside.name}")
        return [], []

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        if self.on_problem is not None:
            self.on_problem(message)
        else:
            log.warning(message)

    def user_concepts(self) -> list[Concept]:
        return self._read_user()[0]

    def hidden(self) -> list[str]:
        return self._read_user()[1]

    def list(self, include_hidden: bool = False) -> list[Concept]:
        """Visible concepts: built-ins (not hidden, not shadowed) first, then the user's."""
        return self.fill(self._visible(include_hidden))

    def _visible(self, include_hidden: bool = False) -> list[Concept]:
        user, hidden = self._read_user()
        names = {c.name for c in user}
        out = [
            c
            for c in self.builtins()
            if c.name not in names and (include_hidden or c.name not in hidden)
        ]
        return out + user

    def names(self) -> list[str]:
        return [c.name for c in self._visible()]

    def get(self, name: str, generator: Any = None) -> Concept:
        """The visible concept ``name``, filled (``fill``) for ``generator`` when given."""
        visible = self._visible()
        for c in visible:
            if c.name == name:
                return self.fill([c], generator)[0]
        raise self._unknown_error(name, visible)

    def _unknown_error(self, name: str, visible: list[Concept]) -> ConceptError:
        """The error for a name not among ``visible``: it lists the concepts menus offer
        (at most 20), and only counts the hidden ones (usable by name, listed by ``--all``)."""
        known = _some([c.name for c in visible if not c.hidden])
        unnamed = sum(c.hidden for c in visible)
        more = f" (and {unnamed} hidden: `ganpaint concept list --all`)" if unnamed else ""
        return ConceptError(f"unknown concept {name!r} for {self.model_id}; known: {known}{more}")

    def is_builtin(self, name: str) -> bool:
        return any(c.name == name for c in self.builtins())

    def source_of(self, name: str) -> str:
        """Where a visible name comes from: "built-in" or "user"."""
        user = {c.name for c in self.user_concepts()}
        if name in user:
            return "user"
        if name not in self.names():
            self.get(name)  # raises the unknown-concept error
        return "built-in"

    def fill(self, concepts: list[Concept], generator: Any = None) -> list[Concept]:
        """Concepts without values get their model's on-values (one lookup a layer): the
        published table where the reference ships one, else the generator's cached 0.99
        quantiles when a generator was given (here, else the library's). With a generator
        every concept is first checked against its layers, and given values against the same
        on-values (ConceptError, never a crash or a black edit)."""
        gen = generator if generator is not None else self.generator
        if gen is None and all(c.values is not None for c in concepts):
            return concepts
        from .quantiles import on_values, published_table

        channels = None if gen is None else {i.name: i.channels for i in gen.infos}
        tables: dict[str, list[float] | None] = {}
        out = []
        for c in concepts:
            if channels is not None:
                c.check_layer(channels)
            if c.layer not in tables:
                table = published_table(self.model_id, c.layer)
                if table is not None:
                    tables[c.layer] = [float(v) for v in table["values"]]
                elif gen is not None:
                    tables[c.layer] = on_values(gen, c.layer).tolist()
                else:
                    tables[c.layer] = None
            on = tables[c.layer]
            if on is not None:
                c = c.with_values(on) if c.values is None else c
                if channels is not None:
                    c = c.check_values(on)
            out.append(c)
        return out

    def values_source(self, name: str) -> dict:
        """Where a visible concept's "on" values come from: {"kind": "concept"} when it
        carries its own, else quantiles.values_source (published table or sampled)."""
        visible = {c.name: c for c in self._visible()}
        if name not in visible:
            self.get(name)  # raises the unknown-concept error
        c = visible[name]
        if c.values is not None:
            return {"kind": "concept", "source": "stored with the concept"}
        from .quantiles import values_source

        return values_source(self.model_id, c.layer)

    # -- changing ----------------------------------------------------------------------
    def _mutate(self, change: Callable[[list[Concept], list[str]], Any]) -> Any:
        """Run ``change(concepts, hidden)`` (edits the lists in place) under the lock and
        write the result atomically."""
        with locked(self.user_path):
            remove_stale_temps(self.user_path)
            concepts, hidden = self._read_user(held=True)
            result = change(concepts, hidden)
            self._write(concepts, hidden)
        return result

    def _write(self, concepts: list[Concept], hidden: list[str]) -> None:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model_id,
            "concepts": [c.to_dict() for c in concepts],
        }
        if hidden:
            data["hidden"] = sorted(set(hidden))
        if len(concepts) > MAX_CONCEPTS:
            raise ConceptError(
                f"{self.model_id} would have {len(concepts)} concepts of your own, more than "
                f"the {MAX_CONCEPTS} allowed; delete some first"
            )
        text = dumps(data) + "\n"
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise ConceptError(
                f"the concept library of {self.model_id} would pass "
                f"{MAX_FILE_BYTES // 2**20} MiB; delete some concepts first"
            )
        try:
            atomic_write_text(self.user_path, text)
        except OSError as e:
            raise ConceptError(f"cannot write {self.user_path}: {e.strerror or e}") from None

    def _check_model(self, c: Concept) -> None:
        if c.model != self.model_id:
            raise ConceptError(
                f"concept {c.name!r} belongs to model {c.model!r}, not {self.model_id!r}"
            )

    def add(self, concept: Concept, replace: bool = False) -> Concept:
        """Save a concept; an existing visible name needs ``replace``."""
        concept.validate()
        self._check_model(concept)

        def change(concepts: list[Concept], hidden: list[str]) -> None:
            visible = self._visible_names(concepts, hidden)
            if concept.name in visible and not replace:
                raise ConceptError(
                    f"concept {concept.name!r} already exists for {self.model_id}; "
                    "choose another name or replace it"
                )
            concepts[:] = [c for c in concepts if c.name != concept.name] + [concept]

        self._mutate(change)
        return concept

    def replace_all(self, concepts: Iterable[Concept]) -> None:
        """Make the user's concepts exactly ``concepts`` (hidden built-ins unchanged)."""
        new = list(concepts)
        for c in new:
            c.validate()
            self._check_model(c)
        if len({c.name for c in new}) != len(new):
            raise ConceptError("two concepts with the same name")

        def change(concepts: list[Concept], hidden: list[str]) -> None:
            concepts[:] = new

        self._mutate(change)

    def _visible_names(self, concepts: list[Concept], hidden: list[str]) -> set[str]:
        return {c.name for c in concepts} | {
            c.name for c in self.builtins() if c.name not in hidden
        }

    def delete(self, name: str) -> None:
        """Remove a visible concept (a built-in one is hidden; ``restore`` brings it back)."""

        def change(concepts: list[Concept], hidden: list[str]) -> None:
            if name not in self._visible_names(concepts, hidden):
                self._unknown(name, concepts, hidden)
            concepts[:] = [c for c in concepts if c.name != name]
            if self.is_builtin(name) and name not in hidden:
                hidden.append(name)

        self._mutate(change)

    def rename(self, old: str, new: str) -> Concept:
        check_name(new)

        def change(concepts: list[Concept], hidden: list[str]) -> Concept:
            visible = self._visible_names(concepts, hidden)
            if old not in visible:
                self._unknown(old, concepts, hidden)
            if new == old:
                raise ConceptError(f"concept is already called {new!r}")
            if new in visible:
                raise ConceptError(f"concept {new!r} already exists for {self.model_id}")
            mine = [c for c in concepts if c.name == old]
            base = mine[0] if mine else next(c for c in self.builtins() if c.name == old)
            renamed = base.renamed(new)
            concepts[:] = [renamed if c.name == old else c for c in concepts]
            if not mine:
                concepts.append(renamed)
            if self.is_builtin(old) and old not in hidden:
                hidden.append(old)
            return renamed

        return self._mutate(change)

    def restore(self, name: str) -> Concept:
        """Show a hidden built-in again (a user concept of that name keeps shadowing it)."""
        if not self.is_builtin(name):
            builtins = ", ".join(c.name for c in self.builtins()) or "none"
            raise ConceptError(f"{name!r} is not a built-in concept; built-ins: {builtins}")

        def change(concepts: list[Concept], hidden: list[str]) -> None:
            hidden[:] = [h for h in hidden if h != name]

        self._mutate(change)
        return self.get(name)

    def _unknown(self, name: str, concepts: list[Concept], hidden: list[str]) -> None:
        names = self._visible_names(concepts, hidden)
        visible = {c.name: c for c in self.builtins() + concepts if c.name in names}
        raise self._unknown_error(name, sorted(visible.values(), key=lambda c: c.name))

    # -- sharing -----------------------------------------------------------------------
    def export(self, path: Path, names: Iterable[str] | None = None) -> list[str]:
        """Write visible concepts (all, or the given names) to a file others can import."""
        chosen = self.list() if names is None else [self.get(n) for n in names]
        data = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model_id,
            "concepts": [c.to_dict() for c in chosen],
        }
        try:
            atomic_write_json(Path(path), data)
        except OSError as e:
            raise ConceptError(f"cannot write {path}: {e.strerror or e}") from None
        return [c.name for c in chosen]

    def import_file(self, path: Path, replace: bool = False) -> list[str]:
        """Add every concept of an exported file; all or nothing."""
        try:
            with open(path, "rb") as f:
                data = parse_json(read_bounded(f, MAX_FILE_BYTES).decode("utf-8"))
        except FileNotFoundError:
            raise ConceptError(f"no such file: {path}") from None
        except (OSError, ValueError) as e:
            raise ConceptError(f"cannot read {path}: {one_line(e)}") from None
        try:
            incoming = _parse(data, None)[0]
            channels = model_layers(self.model_id)
            for c in incoming:
                self._check_model(c)
                if channels is not None:  # a registered model: layers known without weights
                    c.check_layer(channels)
        except (ConceptError, _NewerFormat) as e:
            raise ConceptError(f"{path}: {one_line(e)}") from None

        def change(concepts: list[Concept], hidden: list[str]) -> list[str]:
            clash = sorted({c.name for c in incoming} & self._visible_names(concepts, hidden))
            if clash and not replace:
                raise ConceptError(
                    f"concepts already exist: {', '.join(clash)}; import with replace"
                )
            names = {c.name for c in incoming}
            concepts[:] = [c for c in concepts if c.name not in names] + incoming
            return [c.name for c in incoming]

        return self._mutate(change)


class _NewerFormat(Exception):
    pass


def model_layers(model_id: str) -> dict[str, int] | None:
    """{layer name: channels} of a registered model, from its architecture alone (built on
    torch's meta device: no weights read, no memory); None for a model not registered."""
    import torch

    from ..generators.base import ModelError
    from ..generators.registry import get_spec

    try:
        spec = get_spec(model_id)
    except ModelError:
        return None
    with torch.device("meta"):
        if spec.family == "dcgan64":
            from ..generators.dcgan import DCGAN64

            gen = DCGAN64(spec.id)
        else:
            from ..generators.progan import ProGAN, ProGAN256

            gen = ProGAN256(spec.id) if spec.resolution == 256 else ProGAN(spec.id, spec.resolution)
    return {i.name: i.channels for i in gen.infos}


def _parse(data: Any, model_id: str | None) -> tuple[list[Concept], list[str]]:
    """Validate a concepts file's content: (concepts, hidden names)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConceptError(f"not a {FORMAT} file")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise ConceptError(f"bad version {version!r}")
    if version > VERSION:
        raise _NewerFormat(
            f"concepts file format {version} is newer than this ganpaint reads ({VERSION}); "
            "upgrade ganpaint"
        )
    if model_id is not None and data.get("model") != model_id:
        raise ConceptError(f"file is for model {data.get('model')!r}, not {model_id!r}")
    items = data.get("concepts")
    if not isinstance(items, list):
        raise ConceptError("'concepts' must be a list")
    if len(items) > MAX_CONCEPTS:
        raise ConceptError(f"{len(items)} concepts, more than the {MAX_CONCEPTS} allowed")
    concepts = [Concept.from_dict(d) for d in items]
    counts = Counter(c.name for c in concepts)
    dup = sorted(n for n, k in counts.items() if k > 1)
    if dup:
        raise ConceptError(f"concept names listed twice: {', '.join(dup)}")
    hidden = data.get("hidden") or []
    if not isinstance(hidden, list) or not all(isinstance(h, str) for h in hidden):
        raise ConceptError("'hidden' must be a list of names")
    return concepts, list(hidden)


def _some(names: list[str], shown: int = 20) -> str:
    """The first ``shown`` names, and how many more: a message stays one readable line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "none") + more
