"""What the compute loop is doing, and the watchdog that ends a process whose loop or threads stopped.

`ComputeProgress` is written by the compute loop (each round, each batch, each denoising or generation step)
and read by two others: the intake, which receives more messages only when the running batch will end soon
(`remaining_s`), so that what this worker cannot start within about one batch stays visible to other workers;
and the `Watchdog`, which ends the process (after giving back every held message) when a thread it depends on
died or the compute loop made no progress for `stall_multiple` times its expected step time (at least
`min_stall_s`; `load_s` while a model loads): a wedged device call cannot be interrupted from Python, and a
restarted process (systemd/the supervisor) can do the work again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

EWMA_WEIGHT = 0.3  # of the newest batch's step time in the expected step time


class ComputeProgress:
    """Thread-safe enough for its readers: single writer (the compute loop), readers take a consistent copy."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._batch_started: float | None = None
        self._loading = False
        self._step, self._steps = 0, 0
        self.expected_step_s: float | None = None  # seconds per step, from earlier batches

    def beat(self) -> None:
        """The loop is alive (between batches)."""
        with self._lock:
            self._last_beat = self._clock()

    def batch_started(self, *, loading: bool = False) -> None:
        with self._lock:
            self._batch_started = self._last_beat = self._clock()
            self._loading = loading
            self._step, self._steps = 0, 0

    def stepped(self, step: int, steps: int) -> None:
        with self._lock:
            self._last_beat = self._clock()
            self._loading = False
            self._step, self._steps = step, steps

    def batch_ended(self) -> None:
        with self._lock:
            now = self._clock()
            if self._batch_started is not None and self._step > 0:
                per_step = (now - self._batch_started) / self._step
                previous = self.expected_step_s
                self.expected_step_s = (
                    per_step if previous is None else EWMA_WEIGHT * per_step + (1 - EWMA_WEIGHT) * previous
                )
            self._batch_started = None
            self._last_beat = now
            self._loading = False

    @property
    def busy(self) -> bool:
        return self._batch_started is not None

    def remaining_s(self) -> float | None:
        """Seconds until the running batch ends: 0 when idle, None before its first step (unknown)."""
        with self._lock:
            if self._batch_started is None:
                return 0.0
            if self._step <= 0 or self._steps <= 0:
                return None
            per_step = (self._clock() - self._batch_started) / self._step
            return per_step * max(0, self._steps - self._step)

    def stall(self, *, multiple: float, min_s: float, load_s: float) -> float | None:
        """Seconds without progress, when over the limit; None while within it."""
        with self._lock:
            silent = self._clock() - self._last_beat
            limit = load_s if self._loading else max(min_s, multiple * (self.expected_step_s or 0.0))
        return silent if silent > limit else None


@dataclass(frozen=True)
class StallLimits:
    multiple: float
    min_s: float
    load_s: float


class Watchdog(threading.Thread):
    """Every `interval_s`: each check must hold, and the compute loop must not be stalled; else `on_trip`."""

    def __init__(
        self,
        progress: ComputeProgress,
        limits: StallLimits,
        checks: dict[str, Callable[[], bool]],
        on_trip: Callable[[str], None],
        interval_s: float = 1.0,
    ) -> None:
        super().__init__(name="watchdog", daemon=True)
        self._progress = progress
        self._limits = limits
        self._checks = checks
        self._on_trip = on_trip
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def problem(self) -> str | None:
        for name, holds in self._checks.items():
            if not holds():
                return f"the {name} thread died"
        stalled = self._progress.stall(
            multiple=self._limits.multiple, min_s=self._limits.min_s, load_s=self._limits.load_s
        )
        if stalled is not None:
            return f"the compute loop made no progress for {stalled:.0f} s"
        return None

    def run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            problem = self.problem()
            if problem is not None:
                log.critical("%s: giving back every held message and exiting", problem)
                self._on_trip(problem)
                return

    def stop(self) -> None:
        self._stopped.set()
