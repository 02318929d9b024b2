"""Apply one out-queue event (started, progress, finished) to its execution record.

Events arrive duplicated and out of order: every write is conditional (see `ExecutionStore`), so a late or
repeated event simply does not apply. Returns the status the execution entered, or None when nothing changed,
so the caller counts only real transitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.webhooks.events import EventKind, publish_execution_change
from shared.messages import ExecutionStatus, OutEvent, OutQueueMessage

if TYPE_CHECKING:  # the store and the records bring in pynamodb, which the consumer loads on its first batch
    from functions.executions.store import ExecutionStore
    from shared.models import ExecutionRecord


def apply_out_event(store: ExecutionStore, message: OutQueueMessage) -> ExecutionStatus | None:
    """The new status when the event moved the execution to another status; None otherwise."""
    record = store.get(message.execution_id)
    if record is None:
        return None  # the execution was deleted (or never existed): never create one from an event
    if ExecutionStatus(record.status).is_final:
        return None
    if message.event is OutEvent.STARTED:
        started = store.mark_started(record, message.at)
        publish_execution_change(started, EventKind.STARTED)
        return ExecutionStatus.RUNNING if started else None
    if message.event is OutEvent.PROGRESS:
        return _apply_progress(store, record, message)
    return _apply_finished(store, record, message)


def _apply_progress(store: ExecutionStore, record: ExecutionRecord, message: OutQueueMessage) -> ExecutionStatus | None:
    if message.progress is None:
        return None
    updated = store.record_progress(record, message.progress.model_dump(mode="json"), message.at)
    publish_execution_change(updated, EventKind.PROGRESS)
    started_now = updated is not None and record.status == ExecutionStatus.QUEUED
    if started_now:  # the progress event overtook its started event, whose own write will not apply
        publish_execution_change(updated, EventKind.STARTED)
    return ExecutionStatus.RUNNING if started_now else None


def _apply_finished(store: ExecutionStore, record: ExecutionRecord, message: OutQueueMessage) -> ExecutionStatus | None:
    status = ExecutionStatus(message.status or ExecutionStatus.FAILED)
    error = message.error.model_dump(mode="json") if message.error else None
    if status is ExecutionStatus.FAILED and error is None:
        error = {"code": "FAILED", "message": "the execution failed"}
    progress = _final_progress(record, message) if status is ExecutionStatus.SUCCEEDED else None
    # A queued execution the worker cancelled before starting it never gets a startedAt.
    started = not (status is ExecutionStatus.CANCELLED and record.status == ExecutionStatus.QUEUED)
    result_uri = message.execution_uri if status is ExecutionStatus.SUCCEEDED else None
    finished = store.finish(
        record, status, message.at, error=error, result_uri=result_uri, progress=progress, started=started
    )
    publish_execution_change(finished, EventKind.COMPLETED)
    return status if finished is not None else None


def _final_progress(record: ExecutionRecord, message: OutQueueMessage) -> dict[str, Any]:
    """Progress of a SUCCEEDED execution: its last known shape, at its last stage and step, 100 %."""
    base: dict[str, Any] = dict(record.progress or {"stage": 1, "stages": 1, "step": 0, "steps": 0})
    if message.progress is not None:
        base.update(message.progress.model_dump(mode="json"))
    base["stage"] = base.get("stages", 1)
    base["step"] = base.get("steps", 0)
    base["percent"] = 100
    return base
