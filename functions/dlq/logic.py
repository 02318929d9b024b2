"""Fail the execution of an in-queue message that exhausted its receives and landed in the dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.webhooks.events import EventKind, publish_execution_change
from shared import resources as res
from shared.messages import ExecutionStatus, InQueueMessage, utc_now_iso

if TYPE_CHECKING:  # the store brings in pynamodb, which the handler loads on its first batch
    from functions.executions.logic import ExecutionDeps

RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"


def fail_dead_lettered(deps: ExecutionDeps, message: InQueueMessage) -> bool:
    """Mark the execution FAILED unless it is already final (or gone); True when it was failed here.

    Its slot is freed then, and the user's next waiting execution admitted.
    """
    record = deps.store.get(message.execution_id)
    if record is None or record.deleted_at or ExecutionStatus(record.status).is_final:
        return False
    receives = res.in_queue_spec(record.backend).max_receive_count
    error = {
        "code": RETRIES_EXHAUSTED,
        "message": f"no worker completed the execution after {receives} receives of its message; "
        "it was moved to the dead-letter queue",
    }
    from_status = ExecutionStatus(record.status)
    failed = deps.store.finish(
        record.execution_id, record.user_id, ExecutionStatus.FAILED, utc_now_iso(), error=error, from_status=from_status
    )
    if failed is None:
        return False
    publish_execution_change(failed, EventKind.COMPLETED)
    from functions.executions import admission  # the store's pynamodb: loaded on the first batch

    admission.ended_quietly(record.user_id, record.execution_id, deps)
    return True
