"""Progress of an execution across its stages, and the throttle that keeps progress events to a few a second."""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.messages import Progress


def overall_progress(stage_index: int, stages: int, step: int, steps: int) -> Progress:
    """Progress in stage `stage_index` (0-based) at `step` of `steps`; percent covers the whole execution.

    It stays below 100 until the execution has finished (the finished event carries 100).
    """
    fraction = (stage_index + (step / steps if steps else 0.0)) / stages
    return Progress(stage=stage_index + 1, stages=stages, step=step, steps=steps, percent=min(99, int(fraction * 100)))


class ProgressThrottle:
    """Lets a progress event through at most every `interval_s` seconds, and always when forced."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def allow(self, *, force: bool = False) -> bool:
        now = self._clock()
        if force or self._last is None or now - self._last >= self._interval_s:
            self._last = now
            return True
        return False
