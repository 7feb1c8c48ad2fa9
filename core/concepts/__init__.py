"""Concepts: named, ranked sets of units at a layer, with their "on" values.

- record.py     the Concept record (``top(strength)`` → the brush's units and values)
- library.py    built-ins (data/<model>.json) + the user's concepts, crash-safe files
- published.py  GAN Dissection's churchoutdoor layer4 rankings (unit 418 left out)
- quantiles.py  units' 0.99-quantile "on" values, cached per model weights
- rank.py       pure ranking functions (selection scores, IoU, spherical k-means)
- learn.py      learn a concept from one selection on a photo
- discover.py   group units without labels; contact sheet
- dissect.py    GAN Dissection with a user-supplied segmenter
"""

from .library import ConceptLibrary
from .record import Concept, ConceptError

__all__ = ["Concept", "ConceptError", "ConceptLibrary"]
