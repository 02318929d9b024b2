"""Whether an execution should stop: cancelled, cancel requested, or deleted (read from its record).

The compute thread asks at every step, so the answer must cost nothing: a background thread re-reads the
records of the executions in hand every `refresh_s` and the compute thread only reads the flags it left.
"""

from __future__ import annotations

import logging
import threading

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from shared.errors import TransientFailure
from shared.messages import FINAL_STATUSES, ExecutionStatus
from shared.models import ExecutionRecord

log = logging.getLogger(__name__)


class ExecutionRecords:
    """The worker's read-only view of execution records."""

    def __init__(self, refresh_s: float = 1.0) -> None:
        self._refresh_s = refresh_s
        self._stop_flags: dict[str, bool] = {}  # execution id -> should stop; only watched executions
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def should_skip(self, execution_id: str) -> bool:
        """True when the execution must not start: deleted, or already final (cancelled while queued)."""
        record = self._read(execution_id)
        return record is None or ExecutionStatus(record.status) in FINAL_STATUSES

    def watch(self, execution_id: str) -> None:
        with self._lock:
            self._stop_flags.setdefault(execution_id, False)

    def should_stop(self, execution_id: str) -> bool:
        """True when a running execution must stop at its next step; no I/O (see `refresh`)."""
        return self._stop_flags.get(execution_id, False)

    def forget(self, execution_id: str) -> None:
        with self._lock:
            self._stop_flags.pop(execution_id, None)

    def refresh(self) -> None:
        """Re-read every watched record; a failed read keeps the last answer."""
        with self._lock:
            watched = list(self._stop_flags)
        for execution_id in watched:
            try:
                record = self._read(execution_id)
            except TransientFailure as exc:
                log.warning("could not check %s for cancellation: %s", execution_id, exc)
                continue
            stop = record is None or record.cancel_requested or ExecutionStatus(record.status) in FINAL_STATUSES
            with self._lock:
                if execution_id in self._stop_flags:
                    self._stop_flags[execution_id] = bool(stop)

    def _run(self) -> None:
        while not self._stopped.wait(self._refresh_s):
            self.refresh()

    @staticmethod
    def _read(execution_id: str) -> ExecutionRecord | None:
        try:
            return ExecutionRecord.get(execution_id, consistent_read=True)
        except DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise TransientFailure(f"could not read execution {execution_id}: {exc}") from exc
