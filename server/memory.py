"""How the server process gives memory back (glibc's allocator; no-ops elsewhere).

glibc serves a freed block's size from its heap next time (its mmap threshold follows the
largest block freed, up to 32 MiB) and keeps freed heap memory resident. A max-size job
allocates and frees many such blocks (strips of a large selection), so without these the
resident floor, and with it the peak of every later job, would creep up by hundreds of MiB.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 4 << 20  # blocks from 4 MiB up are mapped, and unmapped when freed


def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def map_large_blocks() -> None:
    """Serve blocks of MMAP_THRESHOLD and more from their own mappings (a fixed threshold
    also stops glibc from raising it). Call once at process start."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (after each job)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
