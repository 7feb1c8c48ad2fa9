"""ganpaint.core: the method (generators, inversion, edits, G′ adaptation, compositing).

Knows nothing of sockets or GIMP: pure functions over tensors and arrays.
"""

__version__ = "0.1.0"
