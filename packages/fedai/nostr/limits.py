"""Bounded memory against untrusted relays: an LRU of event ids, and a per-author sliding-window budget."""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_TRACKED_AUTHORS = 100_000


class Lru:
    """A bounded map from event id to its created_at, forgetting the least recently used."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> int | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def add(self, key: str, value: int = 0) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


class AuthorBudget:
    """At most `limit` accepted events per author in any sliding window of `window` seconds."""

    def __init__(self, limit: int, window: float, max_authors: int = MAX_TRACKED_AUTHORS) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("author_budget needs a positive count and window")
        self._limit = limit
        self._window = window
        self._max_authors = max_authors
        self._log: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, author: str, now: float) -> bool:
        """Charge one event to `author` if the budget allows it."""
        times = self._log.get(author)
        if times is None:
            times = self._log[author] = deque()
            while len(self._log) > self._max_authors:
                self._log.popitem(last=False)
        else:
            self._log.move_to_end(author)
        cutoff = now - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) >= self._limit:
            return False
        times.append(now)
        return True
