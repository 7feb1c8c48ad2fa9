"""The pipeline's session cache: an LRU mapping bounded by a memory budget.

Values are FitSessions (anything with ``nbytes()``). A session grows after it is stored (the
pipeline attaches the G′ fit when adaptation ends), so sizes are measured again on every
``trim()``; the server trims after each job.

A job sees the cache through ``ScopedSessions``: only the sessions of its own scope (its
client's, unless the server shares them), so that whether a photo was worked on before is
nobody else's to learn.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any


def _size(value: Any) -> int:
    nbytes = getattr(value, "nbytes", None)
    if callable(nbytes):
        return int(nbytes())
    return sys.getsizeof(value)


class SessionCache(MutableMapping):
    """Least recently used entries go first once the total exceeds ``budget_bytes``.

    Thread-safe: the worker reads and writes it, the socket thread reports its size.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = max(0, int(budget_bytes))
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            try:
                value = self._items[key]
            except KeyError:
                self.misses += 1
                raise
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            self.trim()

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._items[key]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def nbytes(self) -> int:
        with self._lock:
            return sum(_size(v) for v in self._items.values())

    def trim(self) -> int:
        """Evict least recently used entries until within budget; returns how many went."""
        with self._lock:
            sizes = {k: _size(v) for k, v in self._items.items()}
            total, evicted = sum(sizes.values()), 0
            while self._items and total > self.budget_bytes:
                key, _ = self._items.popitem(last=False)
                total -= sizes[key]
                evicted += 1
            return evicted

    def stats(self) -> dict:
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self.nbytes(),
                "budget_bytes": self.budget_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


class ScopedSessions(MutableMapping):
    """The part of a cache whose keys carry ``scope``: one client's sessions."""

    def __init__(self, cache: MutableMapping, scope: str):
        self.cache = cache
        self.prefix = f"{scope}/"

    def __getitem__(self, key: str) -> Any:
        return self.cache[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.cache[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        return iter([k[n:] for k in self.cache if k.startswith(self.prefix)])

    def __len__(self) -> int:
        return sum(1 for _ in self)
