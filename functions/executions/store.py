"""Data access for execution records: reads, pages, and the conditional writes that move an execution's state.

Every state change is one conditional UpdateItem, so duplicates and races can never regress a record: a failed
condition comes back as `None` ("not applied"), any other DynamoDB failure as the transient `StoreUnavailable`.
Used by the executions API, the results consumer and the dead-letter handler alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import Condition

from functions.pagination import Page, query_page
from shared.errors import ServiceUnavailable, TransientFailure
from shared.messages import FINAL_STATUSES, ExecutionStatus
from shared.models import ExecutionRecord, IdempotencyRecord

_CONDITION_FAILED = "ConditionalCheckFailedException"
_T = TypeVar("_T")


class StoreUnavailable(ServiceUnavailable, TransientFailure):
    """DynamoDB failed in a way worth retrying (throttling, 5xx, network)."""


class _ConditionFailed(Exception):
    """Internal signal: a conditional write's condition did not hold."""


@contextmanager
def _dynamodb(what: str) -> Iterator[None]:
    try:
        yield
    except PynamoDBException as exc:
        if exc.cause_response_code == _CONDITION_FAILED:
            raise _ConditionFailed(what) from exc
        raise StoreUnavailable(f"database error on {what}") from exc


def _applied(write: Callable[[], _T], what: str) -> _T | None:
    """Run a conditional write; None when its condition did not hold (a duplicate, a late or a raced event)."""
    try:
        with _dynamodb(what):
            return write()
    except _ConditionFailed:
        return None


_FINALS = [str(s) for s in FINAL_STATUSES]
_OPEN = [str(ExecutionStatus.QUEUED), str(ExecutionStatus.RUNNING)]


def user_status(user_id: str, status: str) -> str:
    """The user-status-index partition of an execution."""
    return f"{user_id}#{status}"


class ExecutionStore:
    """Execution and idempotency records (pynamodb, bound to their tables by `shared.models.bind_models`)."""

    # --- reads ---

    def get(self, execution_id: str) -> ExecutionRecord | None:
        with _dynamodb(f"execution {execution_id}"):
            try:
                return ExecutionRecord.get(execution_id, consistent_read=True)
            except ExecutionRecord.DoesNotExist:
                return None

    def page_by_user(self, user_id: str, limit: int, start: dict[str, Any] | None) -> Page[ExecutionRecord]:
        return self._page(ExecutionRecord.by_user, user_id, ("userId",), limit, start)

    def page_by_user_status(
        self, user_id: str, status: str, limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        return self._page(ExecutionRecord.by_user_status, user_status(user_id, status), ("userStatus",), limit, start)

    def page_by_pipeline_user(
        self, pipeline_id: str, user_id: str, limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        partition = f"{pipeline_id}#{user_id}"
        return self._page(ExecutionRecord.by_pipeline_user, partition, ("pipelineUser",), limit, start)

    @staticmethod
    def _page(
        index: Any, partition: str, index_keys: tuple[str, ...], limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        with _dynamodb("execution list"):
            return query_page(index, partition, ("executionId", *index_keys, "sortKey"), limit, start)

    # --- creation and deletion ---

    def create(self, record: ExecutionRecord) -> None:
        with _dynamodb(f"execution {record.execution_id}"):
            record.save(condition=ExecutionRecord.execution_id.does_not_exist())

    def delete(self, execution_id: str) -> None:
        with _dynamodb(f"execution {execution_id}"):
            ExecutionRecord(execution_id).delete()

    def claim_idempotency_key(self, key: str, execution_id: str, expires_at: datetime, now: datetime) -> bool:
        """Claim `key` for `execution_id`; False when another request holds it (an expired claim is taken over)."""
        record = IdempotencyRecord(key, execution_id=execution_id, expires_at=expires_at)
        condition = IdempotencyRecord.idempotency_key.does_not_exist() | (IdempotencyRecord.expires_at < now)
        return _applied(lambda: record.save(condition=condition), f"idempotency key {key}") is not None

    def idempotent_execution_id(self, key: str, now: datetime) -> str | None:
        """The execution a live claim of `key` points at, if any."""
        with _dynamodb(f"idempotency key {key}"):
            try:
                record = IdempotencyRecord.get(key, consistent_read=True)
            except IdempotencyRecord.DoesNotExist:
                return None
        if record.expires_at is not None and record.expires_at < now:
            return None
        return record.execution_id

    def release_idempotency_key(self, key: str, execution_id: str) -> None:
        """Drop a claim this request made (its creation failed), so the client may retry with the same key."""
        condition = IdempotencyRecord.execution_id == execution_id
        _applied(lambda: IdempotencyRecord(key).delete(condition=condition), f"idempotency key {key}")

    # --- state transitions (each returns the new record, or None when it did not apply) ---

    def _update(self, execution_id: str, actions: list[Any], condition: Condition) -> ExecutionRecord | None:
        record = ExecutionRecord(execution_id)
        guarded = ExecutionRecord.execution_id.exists() & condition
        written = _applied(lambda: record.update(actions=actions, condition=guarded), f"execution {execution_id}")
        return None if written is None else record

    def mark_started(self, record: ExecutionRecord, at: str) -> ExecutionRecord | None:
        """QUEUED -> RUNNING with startedAt."""
        actions = [
            ExecutionRecord.status.set(ExecutionStatus.RUNNING.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, ExecutionStatus.RUNNING)),
            ExecutionRecord.started_at.set(at),
        ]
        return self._update(record.execution_id, actions, ExecutionRecord.status == ExecutionStatus.QUEUED.value)

    def record_progress(self, record: ExecutionRecord, progress: dict[str, Any], at: str) -> ExecutionRecord | None:
        """Progress only forwards, and only while open; a progress event before `started` also starts it."""
        actions = [
            ExecutionRecord.progress.set(progress),
            ExecutionRecord.progress_percent.set(progress["percent"]),
            ExecutionRecord.status.set(ExecutionStatus.RUNNING.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, ExecutionStatus.RUNNING)),
            ExecutionRecord.started_at.set(ExecutionRecord.started_at | at),
        ]
        condition = ExecutionRecord.status.is_in(*_OPEN) & (
            ExecutionRecord.progress_percent.does_not_exist() | (ExecutionRecord.progress_percent < progress["percent"])
        )
        return self._update(record.execution_id, actions, condition)

    def finish(
        self,
        record: ExecutionRecord,
        status: ExecutionStatus,
        at: str,
        *,
        error: dict[str, Any] | None = None,
        result_uri: str | None = None,
        progress: dict[str, Any] | None = None,
        started: bool = True,
    ) -> ExecutionRecord | None:
        """Any open state -> a final one; final states never change again."""
        actions = [
            ExecutionRecord.status.set(status.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, status)),
            ExecutionRecord.finished_at.set(at),
        ]
        if started:
            # A finished event that overtook its started event: the execution did run.
            actions.append(ExecutionRecord.started_at.set(ExecutionRecord.started_at | at))
        if error is not None:
            actions.append(ExecutionRecord.error.set(error))
        if result_uri is not None:
            actions.append(ExecutionRecord.result_uri.set(result_uri))
        if progress is not None:
            actions += [
                ExecutionRecord.progress.set(progress),
                ExecutionRecord.progress_percent.set(progress["percent"]),
            ]
        return self._update(record.execution_id, actions, ExecutionRecord.status.is_in(*_OPEN))

    def cancel_queued(self, record: ExecutionRecord, at: str) -> ExecutionRecord | None:
        """QUEUED -> CANCELLED at once (it never starts, so no startedAt)."""
        actions = [
            ExecutionRecord.status.set(ExecutionStatus.CANCELLED.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, ExecutionStatus.CANCELLED)),
            ExecutionRecord.finished_at.set(at),
            ExecutionRecord.cancel_requested.set(True),
        ]
        return self._update(record.execution_id, actions, ExecutionRecord.status == ExecutionStatus.QUEUED.value)

    def request_cancel(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """RUNNING -> cancelRequested; the worker stops at its next step."""
        actions = [ExecutionRecord.cancel_requested.set(True)]
        return self._update(record.execution_id, actions, ExecutionRecord.status == ExecutionStatus.RUNNING.value)
