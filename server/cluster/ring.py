"""Consistent hashing: which worker a key belongs to, moving few keys when workers come and go.

Each worker stands at ``replicas`` points of a 64-bit circle; a key belongs to the first live
worker at or after its own point. A worker that leaves hands only its own keys to the next
ones, and takes them back when it returns; the other workers' keys stay where they are.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Collection, Iterable

REPLICAS = 64  # points per worker: enough for an even share among a handful of workers


def _point(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class HashRing:
    def __init__(self, names: Iterable[str], replicas: int = REPLICAS):
        points = sorted((_point(f"{name}#{i}"), name) for name in names for i in range(replicas))
        self._points = [p for p, _ in points]
        self._names = [n for _, n in points]

    def owners(self, key: str) -> list[str]:
        """Every worker, in the order the key falls to them (the first is its home)."""
        start = bisect.bisect_left(self._points, _point(key))
        seen: dict[str, None] = {}
        for i in range(len(self._names)):
            seen.setdefault(self._names[(start + i) % len(self._names)])
        return list(seen)

    def lookup(self, key: str, live: Collection[str]) -> str | None:
        """The key's first live worker; None when none is live."""
        return next((n for n in self.owners(key) if n in live), None)
