"""A mapping of bounded size that forgets its least recently used entry: the synthetic markets'
caches (minute bars, ticks, years of daily bars) of :mod:`.market`, :mod:`._iex` and
:mod:`.crypto_market`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["Lru"]

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most ``size`` entries: storing one more forgets the least recently used. Reading an
    entry with :meth:`get` or storing it counts as a use; ``key in lru`` does not."""

    __slots__ = ("_items", "size")

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` (now the most recently used), None without one."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)
