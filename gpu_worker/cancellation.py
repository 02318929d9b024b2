"""Whether an execution should stop: cancelled, cancel requested, or deleted (read from its record).

Reads are cached for a short time so that checking at every step costs one DynamoDB read per interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from shared.errors import TransientFailure
from shared.messages import FINAL_STATUSES, ExecutionStatus
from shared.models import ExecutionRecord


class ExecutionRecords:
    """The worker's read-only view of execution records."""

    def __init__(self, cache_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache_s = cache_s
        self._clock = clock
        self._seen: dict[str, tuple[float, bool]] = {}

    def should_skip(self, execution_id: str) -> bool:
        """True when the execution must not start: deleted, or already final (cancelled while queued)."""
        record = self._read(execution_id)
        return record is None or ExecutionStatus(record.status) in FINAL_STATUSES

    def should_stop(self, execution_id: str) -> bool:
        """True when a running execution must stop at its next step (cached for `cache_s`)."""
        now = self._clock()
        cached = self._seen.get(execution_id)
        if cached and now - cached[0] < self._cache_s:
            return cached[1]
        try:
            record = self._read(execution_id)
        except TransientFailure:
            return False  # keep going; the next check will tell
        stop = record is None or record.cancel_requested or ExecutionStatus(record.status) in FINAL_STATUSES
        self._seen[execution_id] = (now, stop)
        return stop

    def forget(self, execution_id: str) -> None:
        self._seen.pop(execution_id, None)

    @staticmethod
    def _read(execution_id: str) -> ExecutionRecord | None:
        try:
            return ExecutionRecord.get(execution_id, consistent_read=True)
        except DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise TransientFailure(f"could not read execution {execution_id}: {exc}") from exc
