"""Dynamic batching: stage work of the same batch key, collected for a short window, run as one model call.

Pure Python and clock-injected, so the grouping rules are tested without timing. The collector holds items
by key; a batch is ready when its key has `max_size` items, or when `window_s` has passed since the key's
oldest item arrived. Keys never mix.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Group(Generic[T]):
    ready_at: float  # when the window of the key's oldest item closes
    items: list[T] = field(default_factory=list)


class BatchCollector(Generic[T]):
    """Thread-safe: producers `add`, the compute thread `next_batch`es."""

    def __init__(
        self,
        key_of: Callable[[T], Hashable],
        *,
        window_s: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._key_of = key_of
        self._window_s = window_s
        self._max_size = max_size
        self._clock = clock
        self._groups: OrderedDict[Hashable, _Group[T]] = OrderedDict()
        self._changed = threading.Condition()

    def add(self, item: T, *, urgent: bool = False) -> None:
        """Queue an item; `urgent` items (a later stage of a running execution) need not wait for the window."""
        with self._changed:
            key = self._key_of(item)
            group = self._groups.get(key)
            if group is None:
                now = self._clock()
                group = self._groups[key] = _Group(now if urgent else now + self._window_s)
            group.items.append(item)
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return sum(len(g.items) for g in self._groups.values())

    def take_ready(self) -> list[T] | None:
        """The oldest ready batch (full, or its window elapsed), or None. Never blocks."""
        with self._changed:
            return self._take_ready_locked()

    def _take_ready_locked(self) -> list[T] | None:
        now = self._clock()
        for key, group in self._groups.items():
            if len(group.items) >= self._max_size or now >= group.ready_at:
                batch, rest = group.items[: self._max_size], group.items[self._max_size :]
                if rest:
                    group.items, group.ready_at = rest, now  # leftovers are already late
                else:
                    del self._groups[key]
                return batch
        return None

    def _time_to_next_ready(self) -> float | None:
        if not self._groups:
            return None
        now = self._clock()
        return max(0.0, min(g.ready_at - now for g in self._groups.values()))

    def next_batch(self, timeout_s: float) -> list[T] | None:
        """Wait up to `timeout_s` for a ready batch."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                batch = self._take_ready_locked()
                if batch is not None:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                until_ready = self._time_to_next_ready()
                self._changed.wait(remaining if until_ready is None else min(remaining, max(until_ready, 0.001)))

    def drain(self) -> list[T]:
        """Remove and return every waiting item (on shutdown)."""
        with self._changed:
            items = [item for group in self._groups.values() for item in group.items]
            self._groups.clear()
            return items
