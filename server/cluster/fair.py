"""A queue that takes turns among clients: one seat with many jobs cannot starve the others.

Jobs of one client run in the order they came; clients take turns, the one served longest
ago first (a client new to the queue goes last in the round).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._by_client: OrderedDict[Hashable, deque[T]] = OrderedDict()  # turn order

    def push(self, client: Hashable, item: T, first: bool = False) -> None:
        """Queue an item; ``first`` puts it (and its client) at the head of the line."""
        line = self._by_client.setdefault(client, deque())
        if first:
            line.appendleft(item)
            self._by_client.move_to_end(client, last=False)
        else:
            line.append(item)

    def pop(self, take: Callable[[T], bool] = lambda item: True) -> T | None:
        """The next item in turn that ``take`` accepts (looking only at each client's oldest
        item); its client goes to the end of the round."""
        for client, line in self._by_client.items():
            if take(line[0]):
                item = line.popleft()
                del self._by_client[client]
                if line:
                    self._by_client[client] = line  # back at the end of the round
                return item
        return None

    def remove(self, item: T) -> bool:
        for client, line in self._by_client.items():
            if item in line:
                line.remove(item)
                if not line:
                    del self._by_client[client]
                return True
        return False

    def order(self) -> list[T]:
        """The items in the order they would be popped."""
        lines = [list(line) for line in self._by_client.values()]
        out: list[T] = []
        for depth in range(max(map(len, lines), default=0)):
            out.extend(line[depth] for line in lines if depth < len(line))
        return out

    def count(self, client: Hashable) -> int:
        return len(self._by_client.get(client, ()))

    def clear(self) -> list[T]:
        items = self.order()
        self._by_client.clear()
        return items

    def __len__(self) -> int:
        return sum(map(len, self._by_client.values()))

    def __iter__(self) -> Iterator[T]:
        return iter(self.order())
