"""Concepts: named, ranked sets of units at a layer, with their "on" values.

- record.py     the Concept record (``top(strength)`` → the brush's units and values)
- library.py    built-ins (data/<model>.json) + the user's concepts, crash-safe files
- published.py  the GANPaint demo's churchoutdoor layer4 rankings (ACE / IoU, 418 kept)
- quantiles.py  units' 0.99-quantile "on" values: published tables, else sampled and cached
- rank.py       pure ranking functions (selection scores, IoU, spherical k-means)
- learn.py      learn a concept from one selection on a photo
- discover.py   group units without labels; contact sheet
- dissect.py    GAN Dissection with a user-supplied segmenter
"""

from .library import ConceptLibrary
from .record import Concept, ConceptError

__all__ = ["Concept", "ConceptError", "ConceptLibrary"]
