"""Fail the execution of an in-queue message that exhausted its receives and landed in the dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.webhooks.events import EventKind, publish_execution_change
from shared import resources as res
from shared.messages import ExecutionStatus, InQueueMessage, utc_now_iso

if TYPE_CHECKING:  # the store brings in pynamodb, which the handler loads on its first batch
    from functions.executions.store import ExecutionStore

RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"


def fail_dead_lettered(store: ExecutionStore, message: InQueueMessage) -> bool:
    """Mark the execution FAILED unless it is already final (or gone); True when it was failed here."""
    record = store.get(message.execution_id)
    if record is None or ExecutionStatus(record.status).is_final:
        return False
    receives = res.in_queue_spec(record.backend).max_receive_count
    error = {
        "code": RETRIES_EXHAUSTED,
        "message": f"no worker completed the execution after {receives} receives of its message; "
        "it was moved to the dead-letter queue",
    }
    started = record.status != ExecutionStatus.QUEUED
    failed = store.finish(record, ExecutionStatus.FAILED, utc_now_iso(), error=error, started=started)
    publish_execution_change(failed, EventKind.COMPLETED)
    return failed is not None
