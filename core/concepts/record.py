"""One concept: a ranked list of units at a layer of one model, with an "on" value per unit.

A concept is what the brush paints. ``top(strength)`` gives the first 4 / 10 / 15 units
(GANPaint's low / med / high brushes; the default is the concept's ``default_strength`` or
else high, the demo's default) and their values; ``values`` may be ``None`` for the
published rankings, meaning "each unit's 0.99-quantile activation over random samples of
the loaded generator" — the library fills them in from the model's published table where
the reference ships one (churchoutdoor), else from a per-weights cache when it is given the
generator (see ``quantiles.py``); ``pipeline.edit_photo`` computes the sampled estimate
itself when handed ``values=None`` (the CLI and the server hand it the model's on-values,
published ones included).

What a concept is good for, as measured in its gallery (docs/concepts/): ``ops`` lists the
operations that do what the name says ("add", "remove" or both), ``where`` says where on
the picture they make sense ("the upper third of a face: the hair"), and ``hidden`` marks a
concept nobody could name: it stays usable by name but menus leave it out. ``presence``
(concepts learned from examples) is a probe of where the concept is: a remove switches the
units off only there (``edit.remove_where_present``); its level may be calibrated on real
photos without the concept (``background.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..edit import DEFAULT_STRENGTH, STRENGTHS, Presence

SOURCES = ("published", "learned", "discovered", "dissected")
OPS = ("add", "remove")
# Names travel through menus, file names of exports and the server protocol: one line, no
# path characters (the same rule as the server's request validation).
NAME_RE = re.compile(r"^[\w][\w .\-]{0,63}$")
# Units' "on" values are activations: O(1) for our models' layers. Anything beyond this is
# a broken or hostile file (1e39 overflows float32 to inf and turns a photo black).
MAX_VALUE = 1e4
# At use, against the loaded layer: no value beyond this many times the layer's largest
# 0.99-quantile activation (learned values are region means, a few times that at most).
MAX_VALUE_OVER_QUANTILE = 16.0
FLOAT32_MAX = 3.4028234663852886e38
# A concept's text is for a menu's tooltip; its units are one layer's channels (512 at most in
# our models). Bounds so that one concept cannot make a listing or a library huge.
MAX_TEXT = 4000  # characters of description and of where
MAX_UNITS = 4096


class ConceptError(Exception):
    """Anything wrong with a concept or the library; the message is one line for the user."""


def now_iso() -> str:
    """The current time as ISO-8601 UTC, seconds precision: ``2024-05-01T12:00:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name != name.strip():
        raise ConceptError(
            f"bad concept name {name!r}: 1-64 letters, digits, spaces, '_', '-' or '.', "
            "starting with a letter, digit or '_'"
        )
    return name


@dataclass
class Concept:
    name: str
    model: str  # model id, e.g. "digiface-dcgan64"
    layer: str  # layer name, e.g. "layer2"
    units: list[int]  # ranked, best first
    values: list[float] | None  # per-unit "on" values aligned with units; None = quantiles
    source: str  # one of SOURCES
    created: str = field(default_factory=now_iso)  # ISO-8601 UTC
    description: str = ""
    scores: list[float] | None = None  # the ranking's score per unit, when it has one
    excluded: list[int] = field(default_factory=list)  # units left out of edits, and why
    strengths: dict[str, int] = field(default_factory=lambda: dict(STRENGTHS))
    ops: list[str] = field(default_factory=lambda: list(OPS))  # the operations that work
    where: str = ""  # where on a picture the edit makes sense, in words
    hidden: bool = False  # unnamed: left out of menus and listings unless all are asked for
    # The brush used when a request names none; None = edit.DEFAULT_STRENGTH (the demo's 15).
    default_strength: str | None = None
    presence: Presence | None = None  # where the concept is; None: remove everywhere selected

    def __post_init__(self) -> None:
        self.validate()

    # -- checks ------------------------------------------------------------------------
    def validate(self) -> Concept:
        check_name(self.name)
        if not isinstance(self.model, str) or not self.model:
            raise ConceptError(f"concept {self.name!r}: missing model id")
        if not isinstance(self.layer, str) or not self.layer:
            raise ConceptError(f"concept {self.name!r}: missing layer name")
        if self.source not in SOURCES:
            raise ConceptError(
                f"concept {self.name!r}: source must be one of {', '.join(SOURCES)}, "
                f"not {self.source!r}"
            )
        if not self.units:
            raise ConceptError(f"concept {self.name!r} has no units")
        if len(self.units) > MAX_UNITS or len(self.excluded) > MAX_UNITS:
            raise ConceptError(f"concept {self.name!r}: more than {MAX_UNITS} units")
        for label, text in (("description", self.description), ("where", self.where)):
            if isinstance(text, str) and len(text) > MAX_TEXT:
                raise ConceptError(
                    f"concept {self.name!r}: its {label} has {len(text)} characters, more "
                    f"than the {MAX_TEXT} allowed"
                )
        if not isinstance(self.created, str) or len(self.created) > 64:
            raise ConceptError(f"concept {self.name!r}: 'created' must be a date of ≤ 64 chars")
        if not all(_is_index(u) for u in self.units):
            raise ConceptError(f"concept {self.name!r}: units must be integers ≥ 0")
        if len(set(self.units)) != len(self.units):
            raise ConceptError(f"concept {self.name!r}: a unit is listed twice")
        for label, seq, bound in (
            ("values", self.values, MAX_VALUE),
            ("scores", self.scores, FLOAT32_MAX),
        ):
            if seq is None:
                continue
            if len(seq) != len(self.units):
                raise ConceptError(f"concept {self.name!r}: one of {label} per unit")
            if not all(_is_number(v) and abs(v) <= bound for v in seq):
                raise ConceptError(
                    f"concept {self.name!r}: {label} must be finite numbers within ±{bound:g}"
                )
        if not all(_is_index(u) for u in self.excluded):
            raise ConceptError(f"concept {self.name!r}: excluded units must be integers ≥ 0")
        if not self.strengths or not all(
            isinstance(k, str) and _is_index(v) and v > 0 for k, v in self.strengths.items()
        ):
            raise ConceptError(f"concept {self.name!r}: strengths must map names to counts ≥ 1")
        if (
            not isinstance(self.ops, list)
            or not self.ops
            or any(op not in OPS for op in self.ops)
            or len(set(self.ops)) != len(self.ops)
        ):
            raise ConceptError(
                f"concept {self.name!r}: ops must list one or both of {', '.join(OPS)}, "
                f"not {self.ops!r}"
            )
        if not isinstance(self.where, str) or not isinstance(self.hidden, bool):
            raise ConceptError(f"concept {self.name!r}: 'where' must be text, 'hidden' true/false")
        if self.default_strength is not None and self.default_strength not in self.strengths:
            raise ConceptError(
                f"concept {self.name!r}: default strength {self.default_strength!r} is not one "
                f"of {', '.join(self.strengths)}"
            )
        if self.presence is not None:
            p = self.presence
            if (
                not isinstance(p, Presence)
                or not p.direction
                or not all(_is_number(v) for v in (*p.direction, p.threshold))
                or not all(abs(v) <= MAX_VALUE for v in (*p.direction, p.threshold))
                or not 0 < p.quantile < 1
                or not (p.background_quantile is None or 0 < p.background_quantile < 1)
            ):
                raise ConceptError(
                    f"concept {self.name!r}: presence needs a direction of finite numbers, a "
                    "finite threshold and quantiles in (0, 1)"
                )
        return self

    def check_layer(self, channels: Mapping[str, int]) -> Concept:
        """Check the layer and units against a model's layers ({name: channel count})."""
        if self.layer not in channels:
            raise ConceptError(
                f"concept {self.name!r}: model {self.model!r} has no layer {self.layer!r} "
                f"(layers: {', '.join(channels)})"
            )
        n = channels[self.layer]
        bad = [u for u in [*self.units, *self.excluded] if u >= n]
        if bad:
            raise ConceptError(
                f"concept {self.name!r}: units {bad[:8]} out of range: layer {self.layer} has "
                f"units 0..{n - 1}"
            )
        if self.presence is not None and len(self.presence.direction) != n:
            raise ConceptError(
                f"concept {self.name!r}: its presence direction has "
                f"{len(self.presence.direction)} units, layer {self.layer} has {n}"
            )
        return self

    def check_values(self, on_values: Sequence[float]) -> Concept:
        """Check the values against the layer's 0.99-quantile table ([C], this layer)."""
        if self.values is None:
            return self
        top = max((abs(float(v)) for v in on_values), default=0.0)
        bound = MAX_VALUE_OVER_QUANTILE * max(top, 1e-3)
        bad = [v for v in self.values if not abs(v) <= bound]
        if bad:
            raise ConceptError(
                f"concept {self.name!r}: values such as {bad[0]:g} are far outside what layer "
                f"{self.layer} produces (its units reach {top:.3g}; limit {bound:.3g})"
            )
        return self

    def supports(self, op: str) -> bool:
        """Whether ``op`` ("add" / "remove") does what the concept's name says."""
        return op in self.ops

    # -- use ---------------------------------------------------------------------------
    def brush(self, strength: str | int | None = None) -> str | int:
        """The strength a request means: its own, else the concept's default, else the
        global one (edit.DEFAULT_STRENGTH, or the largest brush when the concept lacks it)."""
        if strength is not None:
            return strength
        if self.default_strength is not None:
            return self.default_strength
        if DEFAULT_STRENGTH in self.strengths:
            return DEFAULT_STRENGTH
        return max(self.strengths, key=lambda k: self.strengths[k])

    def top(
        self, strength: str | int | None = None, leave_out: Sequence[int] = ()
    ) -> tuple[list[int], list[float] | None]:
        """(units, values) of the brush: the first n ranked units, n = strengths[strength].

        An integer strength is taken as the count itself; None means ``brush(None)``.
        ``leave_out``: units skipped while counting (the next ranked units move up), e.g.
        GANPaint's unit 418 — the reference keeps it, leaving it out is an option of ours.
        Values are ``None`` when the concept relies on the generator's 0.99 quantiles and
        they are not filled in yet.
        """
        strength = self.brush(strength)
        if isinstance(strength, bool) or not isinstance(strength, (str, int)):
            raise ConceptError(f"strength must be a name or a count, not {strength!r}")
        if isinstance(strength, int):
            if strength < 1:
                raise ConceptError(f"strength must be at least 1 unit, not {strength}")
            n = strength
        elif strength in self.strengths:
            n = self.strengths[strength]
        else:
            raise ConceptError(f"unknown strength {strength!r}; known: {', '.join(self.strengths)}")
        skip = {int(u) for u in leave_out}
        keep = [i for i, u in enumerate(self.units) if u not in skip][:n]
        units = [int(self.units[i]) for i in keep]
        values = None if self.values is None else [float(self.values[i]) for i in keep]
        return units, values

    def with_values(self, on_values: Sequence[float]) -> Concept:
        """A copy whose values are ``on_values[u]`` for each unit (a [C] quantile table)."""
        table = [float(v) for v in on_values]
        bad = [u for u in self.units if u >= len(table)]
        if bad:
            raise ConceptError(
                f"concept {self.name!r}: units {bad} out of range 0..{len(table) - 1}"
            )
        return replace(self, values=[table[u] for u in self.units])

    def renamed(self, name: str) -> Concept:
        return replace(self, name=check_name(name))

    # -- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "layer": self.layer,
            "units": [int(u) for u in self.units],
            "values": None if self.values is None else [_round(v) for v in self.values],
            "source": self.source,
            "created": self.created,
        }
        if self.description:
            d["description"] = self.description
        if self.scores is not None:
            d["scores"] = [_round(v) for v in self.scores]
        if self.excluded:
            d["excluded"] = [int(u) for u in self.excluded]
        if self.strengths != STRENGTHS:
            d["strengths"] = dict(self.strengths)
        if list(self.ops) != list(OPS):
            d["ops"] = list(self.ops)
        if self.where:
            d["where"] = self.where
        if self.hidden:
            d["hidden"] = True
        if self.default_strength is not None:
            d["default_strength"] = self.default_strength
        if self.presence is not None:
            d["presence"] = {
                "direction": [_round(v) for v in self.presence.direction],
                "threshold": _round(self.presence.threshold),
                "quantile": self.presence.quantile,
            }
            if self.presence.background_quantile is not None:
                d["presence"]["background_quantile"] = self.presence.background_quantile
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Concept:
        if not isinstance(d, Mapping):
            raise ConceptError(f"a concept must be a JSON object, not {type(d).__name__}")
        missing = [k for k in ("name", "model", "layer", "units", "source") if k not in d]
        if missing:
            raise ConceptError(
                f"concept {d.get('name', '?')!r} lacks field(s) {', '.join(missing)}"
            )
        try:
            return cls(
                name=d["name"],
                model=d["model"],
                layer=d["layer"],
                units=list(d["units"]),
                values=None if d.get("values") is None else list(d["values"]),
                source=d["source"],
                created=str(d.get("created") or ""),
                description=str(d.get("description") or ""),
                scores=None if d.get("scores") is None else list(d["scores"]),
                excluded=list(d.get("excluded") or []),
                strengths=dict(d.get("strengths") or STRENGTHS),
                ops=list(d["ops"]) if d.get("ops") is not None else list(OPS),
                where=d.get("where") or "",
                hidden=d.get("hidden", False),
                default_strength=d.get("default_strength"),
                presence=_presence(d.get("presence")),
            )
        except TypeError as e:  # e.g. units given as a number
            raise ConceptError(f"concept {d.get('name', '?')!r}: {e}") from None


def _presence(d: Any) -> Presence | None:
    if d is None:
        return None
    if not isinstance(d, Mapping) or not isinstance(d.get("direction"), list):
        raise TypeError("presence must be an object with a direction list")
    return Presence(
        tuple(d["direction"]),
        d.get("threshold"),
        d.get("quantile", 0.9),
        d.get("background_quantile"),
    )


def _is_index(u: Any) -> bool:
    return isinstance(u, int) and not isinstance(u, bool) and u >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _round(v: float) -> float:
    """Six significant digits: stable, diff-friendly files."""
    return float(f"{float(v):.6g}")
