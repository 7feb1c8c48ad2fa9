"""A request's edit, resolved in one place: a concept by name, or units by index, becomes
the EditSpec the pipeline runs.

- A concept: its brush (``Concept.top``: the top-ranked units for a strength, skipping
  ``leave_out``), its "on" values, its presence probe (dropped with ``remove_all``), checked
  against the generator's layers.
- Units: checked against the edit layer; an add sets them to the model's on-values
  (``concepts.quantiles.on_values``: the published table where the reference ships one,
  else the generator's sampled 0.99 quantiles, cached per weights), a remove to 0.

The CLI, the server's runner and ``pipeline.edit_photo`` (for a spec without values) all
take their values from here, so one model gets the same numbers whichever way it is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .concepts.library import ConceptLibrary
from .concepts.quantiles import DEFAULT_SAMPLES, on_values
from .concepts.record import Concept, ConceptError
from .edit import Presence, edit_values
from .generators.base import LayeredGenerator


class EditError(ValueError):
    """A request that names no edit this model can make (units out of range, none at all)."""


@dataclass
class EditSpec:
    units: Sequence[int]
    op: str  # "add" | "remove"
    values: Sequence[float] | None = None  # per-unit "on" values; None = the model's on-values
    layer: str | int | None = None  # None = the generator's edit layer
    # With a remove: switch the units off only where the concept is (edit.py); None = in
    # every selected cell, as the published method does.
    presence: Presence | None = None
    concept: Concept | None = None  # the concept it came from, if any
    strength: str | int | None = None  # that concept's brush as used

    def label(self) -> str:
        """What a person asked for: the concept's name, or "units 1,2,3"."""
        if self.concept is not None:
            return self.concept.name
        return "units " + ",".join(str(u) for u in self.units)


def resolve_edit(
    gen: LayeredGenerator,
    op: str,
    units: Sequence[int] | None = None,
    concept: str | None = None,
    strength: str | int | None = None,
    leave_out: Sequence[int] = (),
    remove_all: bool = False,
    library: ConceptLibrary | None = None,
    samples: int = DEFAULT_SAMPLES,
) -> EditSpec:
    """EditSpec for ``units`` or ``concept`` (exactly one). ``library``: the model's concept
    library when the caller keeps one (the server does), else one is read for this call.
    EditError for bad units, ConceptError for a concept that cannot be used."""
    if (units is None) == (concept is None):
        raise EditError("an edit names either units or a concept")
    if concept is None:
        if leave_out:
            raise EditError("leave_out goes with a concept; with units list the units you want")
        units = [int(u) for u in units]
        return EditSpec(units, op, unit_values(gen, gen.edit_layer, units, op, samples).tolist())
    lib = library if library is not None else ConceptLibrary(gen.model_id)
    c = lib.get(concept, generator=gen)
    if c.layer != gen.edit_layer:
        raise ConceptError(
            f"concept {concept!r} is for layer {c.layer}; {gen.model_id} edits at "
            f"layer {gen.edit_layer}"
        )
    top, values = c.top(strength, leave_out=leave_out)
    presence = None if remove_all else c.presence
    return EditSpec(list(top), op, values, c.layer, presence, c, c.brush(strength))


def unit_values(
    gen: LayeredGenerator,
    layer: str | int,
    units: Sequence[int],
    op: str,
    samples: int = DEFAULT_SAMPLES,
    on: torch.Tensor | None = None,
    given: torch.Tensor | None = None,
) -> torch.Tensor:
    """[len(units)] target values of ``units`` at ``layer``: for an add ``given`` (one per
    unit) when the edit names them, else the model's on-values (``on``, [C], when the caller
    has them); zeros for a remove. EditError when a unit is not one of the layer's."""
    info = gen.infos[gen.index(layer)]
    bad = [u for u in units if not 0 <= int(u) < info.channels]
    if bad or not units:
        raise EditError(
            f"unit indices {bad or list(units)} out of range: {gen.model_id} layer "
            f"{info.name} has units 0..{info.channels - 1}"
        )
    if given is not None:
        if len(given) != len(units):
            raise ValueError("one value per unit")
        return given if op == "add" else torch.zeros(len(units))
    if op == "add" and on is None:
        on = on_values(gen, layer, n_samples=samples)
    return edit_values(units, op, on if on is not None else torch.zeros(0))
