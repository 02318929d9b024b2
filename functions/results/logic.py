"""Apply one out-queue event (started, progress, finished) to its execution record, writing without reading.

Events arrive duplicated and out of order: every write is conditional (see `ExecutionStore`), so a late or
repeated event simply does not apply. Returns the status the execution entered, or None when nothing changed,
so the caller counts only real transitions.

Writes are the cost of an execution (docs/ops.md, "Write units per execution"): no record is read before a
write (the owner, needed for the status index's key, comes with the event or from one small cached read);
progress is written at most every `progress_write_interval_s` per execution (it is display only; the final
state always is); a SUCCEEDED execution shows 100 % (see `execution_view`) without a progress write.
A finished event is the end of the execution's slot: the winner of the final write releases it and admits the
user's next waiting execution. A result URI outside the execution's own prefix is refused, and a finished
event of a deleted execution purges its prefix again (outputs written while the delete ran).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from functions.webhooks.events import EventKind, publish_execution_change
from shared.messages import ExecutionStatus, OutEvent, OutQueueMessage
from shared.stages import execution_prefix

if TYPE_CHECKING:  # the store and the records bring in pynamodb, which the consumer loads on its first batch
    from functions.executions.logic import ExecutionDeps

log = logging.getLogger("stagehub.results")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REMEMBERED = 4096  # executions whose owner and last progress write this process remembers


class _Recent:
    """A small LRU of per-execution facts (owner, time of the last progress write) for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > _REMEMBERED:
                self._items.popitem(last=False)


_owners = _Recent()
_progress_written = _Recent()


def apply_out_event(deps: ExecutionDeps, message: OutQueueMessage) -> ExecutionStatus | None:
    """The new status when the event moved the execution to another status; None otherwise."""
    if message.event is OutEvent.PROGRESS:
        return _apply_progress(deps, message)
    owner = _owner(deps, message)
    if owner is None:  # deleted, or never existed: never create one from an event
        if message.event is OutEvent.FINISHED:
            _purge(deps, message.execution_id)
        return None
    if message.event is OutEvent.STARTED:
        started = deps.store.mark_started(message.execution_id, owner, message.at)
        publish_execution_change(started, EventKind.STARTED)
        return ExecutionStatus.RUNNING if started is not None else None
    return _apply_finished(deps, message, owner)


def _owner(deps: ExecutionDeps, message: OutQueueMessage) -> str | None:
    if message.user_id:
        return message.user_id
    owner: str | None = _owners.get(message.execution_id)
    if owner is None:
        owner = deps.store.user_of(message.execution_id)
        if owner is not None:
            _owners.put(message.execution_id, owner)
    return owner


def _apply_progress(deps: ExecutionDeps, message: OutQueueMessage) -> ExecutionStatus | None:
    if message.progress is None or _too_soon(deps, message):
        return None
    progress = message.progress.model_dump(mode="json")
    updated = deps.store.record_progress(message.execution_id, progress)
    if updated is not None:
        _progress_written.put(message.execution_id, message.at)
        publish_execution_change(updated, EventKind.PROGRESS)
        return None
    # Not RUNNING: maybe still QUEUED because this progress event overtook its started event.
    owner = _owner(deps, message)
    if owner is None:
        return None
    started = deps.store.start_with_progress(message.execution_id, owner, progress, message.at)
    if started is None:
        return None
    _progress_written.put(message.execution_id, message.at)
    publish_execution_change(started, EventKind.STARTED)  # the started event's own write will not apply
    publish_execution_change(started, EventKind.PROGRESS)
    return ExecutionStatus.RUNNING


def _too_soon(deps: ExecutionDeps, message: OutQueueMessage) -> bool:
    interval = deps.settings.progress_write_interval_s
    last = _progress_written.get(message.execution_id)
    if not interval or last is None:
        return False
    try:
        elapsed = (_parse_time(message.at) - _parse_time(last)).total_seconds()
    except ValueError:
        return False
    return 0 <= elapsed < interval


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _apply_finished(deps: ExecutionDeps, message: OutQueueMessage, owner: str) -> ExecutionStatus | None:
    status = ExecutionStatus(message.status or ExecutionStatus.FAILED)
    result_uri = message.execution_uri if status is ExecutionStatus.SUCCEEDED else None
    if result_uri is not None and not _own_result(deps, message.execution_id, result_uri):
        log.error("refusing a result URI outside the execution's prefix: %s %s", message.execution_id, result_uri)
        return None
    error = message.error.model_dump(mode="json") if message.error else None
    if status is ExecutionStatus.FAILED and error is None:
        error = {"code": "FAILED", "message": "the execution failed"}
    progress = None
    if status is ExecutionStatus.SUCCEEDED and message.progress is not None:
        progress = message.progress.model_dump(mode="json") | {"percent": 100}
    usage = message.usage.model_dump(mode="json", by_alias=True) if message.usage else None
    store, execution_id = deps.store, message.execution_id
    kwargs: dict[str, Any] = {"error": error, "result_uri": result_uri, "progress": progress, "usage": usage}
    if status is ExecutionStatus.CANCELLED:
        # A queued execution the worker cancelled before starting it never gets a startedAt.
        finished = store.finish(
            execution_id, owner, status, message.at, from_status=ExecutionStatus.RUNNING, **kwargs
        ) or store.finish(execution_id, owner, status, message.at, from_status=ExecutionStatus.QUEUED, **kwargs)
    else:
        finished = store.finish(execution_id, owner, status, message.at, **kwargs)
    if finished is None:
        current = store.get(execution_id)
        if current is None or current.deleted_at:
            _purge(deps, execution_id)  # deleted while the worker was writing its outputs
        elif current.status == status:
            # A redelivered finished event: its first delivery may have died between the final write and the
            # webhook publication. Publish again; the event's webhook-id is the same, so a receiver that got it
            # sees a duplicate at most (API.md: receivers dedupe by webhook-id).
            publish_execution_change(current, EventKind.COMPLETED)
        return None
    publish_execution_change(finished, EventKind.COMPLETED)
    from functions.executions import admission  # the store's pynamodb: loaded on the first batch, not at import

    gpu_seconds = message.usage.gpu_seconds if message.usage else 0.0
    admission.ended_quietly(owner, execution_id, deps, gpu_seconds)
    return status


def _own_result(deps: ExecutionDeps, execution_id: str, uri: str) -> bool:
    """A worker writes an execution's manifest into the results bucket, under that execution's prefix."""
    from shared.storage import S3Uri

    try:
        location = S3Uri.parse(uri)
    except ValueError:
        return False
    prefix = execution_prefix(execution_id)
    return (
        location.bucket == deps.settings.results_bucket
        and location.key.startswith(prefix)
        and ".." not in location.key[len(prefix) :].split("/")
    )


def _purge(deps: ExecutionDeps, execution_id: str) -> None:
    if not _ID.fullmatch(execution_id):
        return  # names no execution's prefix
    deps.blobs.delete_prefix(deps.settings.results_bucket, execution_prefix(execution_id))
