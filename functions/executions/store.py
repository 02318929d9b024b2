"""Data access for execution, idempotency and admission records: reads, pages, and the conditional writes.

Every state change is one conditional write (an UpdateItem returning the new record, or a transaction where
two items must change together), so duplicates and races can never regress a record: a failed condition comes
back as `None` / `False` ("not applied"), any other DynamoDB failure as the transient `StoreUnavailable`.
Used by the executions API, the results consumer, the dead-letter handler and the sweep alike.

The execution indexes project keys only (plus what admission needs, see `shared.resources.EXECUTIONS`): a page
is one index Query and one BatchGetItem of the full records.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition, size
from pynamodb.transactions import TransactWrite

from functions.dynamodb import CONDITION_FAILED, StoreUnavailable
from functions.pagination import Page
from shared.messages import ExecutionStatus
from shared.models import AdmissionRecord, ExecutionRecord, IdempotencyRecord, PipelineRecord

_T = TypeVar("_T")
WAITING_SHARDS = 4
_CONFLICT_RETRIES = 6  # the waiting index's partitions: the sweep reads each; writes spread over them


class _ConditionFailed(Exception):
    """Internal signal: a conditional write's condition did not hold."""


@contextmanager
def _dynamodb(what: str) -> Iterator[None]:
    try:
        yield
    except PynamoDBException as exc:
        if exc.cause_response_code == CONDITION_FAILED:
            raise _ConditionFailed(what) from exc
        raise StoreUnavailable(f"database error on {what}") from exc


def _applied(write: Callable[[], _T], what: str) -> _T | None:
    """Run a conditional write; None when its condition did not hold (a duplicate, a late or a raced event)."""
    try:
        with _dynamodb(what):
            return write()
    except _ConditionFailed:
        return None


_OPEN = [str(ExecutionStatus.QUEUED), str(ExecutionStatus.RUNNING)]


def user_status(user_id: str, status: str) -> str:
    """The user-status-index partition of an execution."""
    return f"{user_id}#{status}"


def waiting_shard(execution_id: str) -> str:
    """The waiting-index partition of a waiting execution (stable per id, spread over WAITING_SHARDS)."""
    return f"w#{zlib.crc32(execution_id.encode()) % WAITING_SHARDS}"


class Admission(Enum):
    """What an attempt to admit one waiting execution found."""

    ADMITTED = "admitted"
    FULL = "full"  # the user's admitted executions are at the limit
    GONE = "gone"  # the execution is no longer waiting (admitted, cancelled or deleted meanwhile)


@dataclass(frozen=True)
class WaitingExecution:
    """A waiting execution as the indexes carry it: enough to admit it and send its in-queue message."""

    execution_id: str
    user_id: str
    sort_key: str
    backend: str = ""
    request_uri: str = ""

    @property
    def created_at(self) -> str:
        return self.sort_key.split("#", 1)[0]


def _transaction_outcome(exc: TransactWriteError) -> list[str]:
    """The cancellation reason code of each item of a cancelled transaction ('None' where it held)."""
    return [(reason.code if reason is not None else "None") for reason in (exc.cancellation_reasons or [])]


def _admitted_queued() -> Condition:
    return (ExecutionRecord.status == ExecutionStatus.QUEUED.value) & ExecutionRecord.waiting_shard.does_not_exist()


def _not_deleted() -> Condition:
    return ExecutionRecord.deleted_at.does_not_exist()


class ExecutionStore:
    """Execution, idempotency and admission records (pynamodb, bound to their tables by `bind_models`)."""

    # --- reads ---

    def get(self, execution_id: str) -> ExecutionRecord | None:
        with _dynamodb(f"execution {execution_id}"):
            try:
                return ExecutionRecord.get(execution_id, consistent_read=True)
            except ExecutionRecord.DoesNotExist:
                return None

    def user_of(self, execution_id: str) -> str | None:
        """The owner of a live (not deleted) execution: one small read, for events that do not carry it."""
        with _dynamodb(f"execution {execution_id}"):
            try:
                found = ExecutionRecord.get(execution_id, attributes_to_get=["userId", "deletedAt"])
            except ExecutionRecord.DoesNotExist:
                return None
        return None if found.deleted_at else found.user_id

    def pipeline_definition_key(self, pipeline_id: str) -> str | None:
        """Where the pipeline's definition (its stages) lies in the pipelines bucket; None for no such pipeline."""
        with _dynamodb(f"pipeline {pipeline_id}"):
            try:
                return PipelineRecord.get(pipeline_id, attributes_to_get=["definitionKey"]).definition_key
            except PipelineRecord.DoesNotExist:
                return None

    def batch_get(self, execution_ids: list[str]) -> list[ExecutionRecord]:
        """The live records of these ids, in this order (deleted ones left out)."""
        if not execution_ids:
            return []
        with _dynamodb("execution batch"):
            found = {r.execution_id: r for r in ExecutionRecord.batch_get(execution_ids, consistent_read=True)}
        return [found[i] for i in execution_ids if i in found and not found[i].deleted_at]

    def page_by_user(self, user_id: str, limit: int, start: dict[str, Any] | None) -> Page[ExecutionRecord]:
        return self._page(ExecutionRecord.by_user, user_id, "userId", limit, start)

    def page_by_user_status(
        self, user_id: str, status: str, limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        return self._page(ExecutionRecord.by_user_status, user_status(user_id, status), "userStatus", limit, start)

    def page_by_pipeline_user(
        self, pipeline_id: str, user_id: str, limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        return self._page(ExecutionRecord.by_pipeline_user, f"{pipeline_id}#{user_id}", "pipelineUser", limit, start)

    def _page(
        self, index: Any, partition: str, partition_name: str, limit: int, start: dict[str, Any] | None
    ) -> Page[ExecutionRecord]:
        """One keys-only index Query (one more than the page, so the last page has no cursor), then the records."""
        with _dynamodb("execution list"):
            keys = list(
                index.query(
                    partition, scan_index_forward=False, limit=limit + 1, page_size=limit + 1, last_evaluated_key=start
                )
            )
        last_key = None
        if len(keys) > limit:
            keys = keys[:limit]
            last = keys[-1]
            last_key = {
                "executionId": {"S": last.execution_id},
                partition_name: {"S": partition},
                "sortKey": {"S": last.sort_key},
            }
        return Page(self.batch_get([k.execution_id for k in keys]), last_key)

    def oldest_waiting(self, user_id: str, skip: frozenset[str] = frozenset()) -> WaitingExecution | None:
        """The user's first-submitted execution still waiting for admission (from its QUEUED partition).

        `skip`: ids this caller already found admitted (the index may lag behind the table by a moment).
        """
        with _dynamodb("waiting executions"):
            found = ExecutionRecord.by_user_status.query(
                user_status(user_id, ExecutionStatus.QUEUED),
                scan_index_forward=True,
                filter_condition=ExecutionRecord.waiting_shard.exists(),
                limit=len(skip) + 1,
                page_size=25,
            )
            item = next((i for i in found if i.execution_id not in skip), None)
        if item is None:
            return None
        return WaitingExecution(item.execution_id, user_id, item.sort_key, item.backend, item.request_uri)

    def waiting_page(self, shard: str, limit: int) -> list[WaitingExecution]:
        """The oldest waiting executions of one waiting-index partition (for the sweep)."""
        with _dynamodb("waiting index"):
            items = list(ExecutionRecord.waiting.query(shard, scan_index_forward=True, limit=limit, page_size=limit))
        return [WaitingExecution(i.execution_id, i.user_id, i.sort_key) for i in items]

    def admission(self, user_id: str) -> AdmissionRecord | None:
        with _dynamodb(f"admission of {user_id}"):
            try:
                return AdmissionRecord.get(user_id, consistent_read=True)
            except AdmissionRecord.DoesNotExist:
                return None

    # --- creation and deletion ---

    def _transact(self, what: str, build: Callable[[TransactWrite], None]) -> list[str] | None:
        """Run a transaction; None when it applied, else each item's cancellation reason code.

        A conflict with another transaction on the same items (a user's admission item is shared by all of that
        user's requests) is retried with a short growing pause; only a persistent one is `StoreUnavailable`.
        """
        connection = ExecutionRecord._get_connection().connection
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with TransactWrite(connection=connection) as transaction:
                    build(transaction)
            except TransactWriteError as exc:
                reasons = _transaction_outcome(exc)
                if "ConditionalCheckFailed" in reasons:
                    return reasons
                if "TransactionConflict" not in reasons and exc.cause_response_code != "TransactionConflictException":
                    raise StoreUnavailable(f"database error on {what}") from exc
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
            except PynamoDBException as exc:
                raise StoreUnavailable(f"database error on {what}") from exc
            else:
                return None
        raise StoreUnavailable(f"{what} kept conflicting with other writes; try again")

    def create_admitted(self, record: ExecutionRecord, max_active: int, expires_at: datetime) -> bool:
        """Write a new execution already admitted, if the user has room and nobody waiting; else nothing."""
        room = (AdmissionRecord.active_ids.does_not_exist() | (size(AdmissionRecord.active_ids) < max_active)) & (
            AdmissionRecord.waiting.does_not_exist() | (AdmissionRecord.waiting <= 0)
        )
        actions: list[Any] = [
            AdmissionRecord.active_ids.add({record.execution_id}),
            AdmissionRecord.expires_at.set(expires_at),
        ]

        def build(t: TransactWrite) -> None:
            t.save(record, condition=ExecutionRecord.execution_id.does_not_exist())
            t.update(AdmissionRecord(record.user_id), actions=actions, condition=room)

        return self._transact(f"execution {record.execution_id}", build) is None

    def create_waiting(self, record: ExecutionRecord, max_waiting: int, expires_at: datetime) -> bool:
        """Write a new execution waiting for admission; False when the user already has `max_waiting` waiting."""
        record.waiting_shard = waiting_shard(record.execution_id)
        quota = AdmissionRecord.waiting.does_not_exist() | (AdmissionRecord.waiting < max_waiting)
        actions: list[Any] = [AdmissionRecord.waiting.add(1), AdmissionRecord.expires_at.set(expires_at)]

        def build(t: TransactWrite) -> None:
            t.save(record, condition=ExecutionRecord.execution_id.does_not_exist())
            t.update(AdmissionRecord(record.user_id), actions=actions, condition=quota)

        applied = self._transact(f"execution {record.execution_id}", build) is None
        if not applied:
            record.waiting_shard = None
        return applied

    def delete(self, execution_id: str) -> None:
        with _dynamodb(f"execution {execution_id}"):
            ExecutionRecord(execution_id).delete()

    def claim_idempotency_key(
        self, key: str, execution_id: str, request_hash: str, expires_at: datetime, now: datetime
    ) -> bool:
        """Claim `key` for `execution_id`; False when another request holds it (an expired claim is taken over)."""
        record = IdempotencyRecord(key, execution_id=execution_id, expires_at=expires_at, request_hash=request_hash)
        condition = IdempotencyRecord.idempotency_key.does_not_exist() | (IdempotencyRecord.expires_at < now)
        return _applied(lambda: record.save(condition=condition), f"idempotency key {key}") is not None

    def idempotency_claim(self, key: str, now: datetime) -> IdempotencyRecord | None:
        """The live claim of `key`, if any (the execution it points at and the hash of its request)."""
        with _dynamodb(f"idempotency key {key}"):
            try:
                record = IdempotencyRecord.get(key, consistent_read=True)
            except IdempotencyRecord.DoesNotExist:
                return None
        if record.expires_at is not None and record.expires_at < now:
            return None
        return record

    def release_idempotency_key(self, key: str, execution_id: str) -> None:
        """Drop a claim this request made (its creation failed), so the client may retry with the same key."""
        condition = IdempotencyRecord.execution_id == execution_id
        _applied(lambda: IdempotencyRecord(key).delete(condition=condition), f"idempotency key {key}")

    # --- admission ---

    def admit(self, waiting: WaitingExecution, max_active: int, at: str, expires_at: datetime) -> Admission:
        """Waiting -> admitted, with the user's admitted set, in one transaction: exactly once whatever races."""
        still_waiting = (
            ExecutionRecord.waiting_shard.exists()
            & (ExecutionRecord.status == ExecutionStatus.QUEUED.value)
            & _not_deleted()
        )
        room = AdmissionRecord.active_ids.does_not_exist() | (size(AdmissionRecord.active_ids) < max_active)
        counter_actions: list[Any] = [
            AdmissionRecord.active_ids.add({waiting.execution_id}),
            AdmissionRecord.waiting.add(-1),
            AdmissionRecord.expires_at.set(expires_at),
        ]

        def build(t: TransactWrite) -> None:
            execution = ExecutionRecord(waiting.execution_id)
            actions: list[Any] = [ExecutionRecord.waiting_shard.remove(), ExecutionRecord.admitted_at.set(at)]
            t.update(execution, actions=actions, condition=still_waiting)
            t.update(AdmissionRecord(waiting.user_id), actions=counter_actions, condition=room)

        reasons = self._transact(f"admission of {waiting.execution_id}", build)
        if reasons is None:
            return Admission.ADMITTED
        return Admission.GONE if reasons[0] == "ConditionalCheckFailed" else Admission.FULL

    def unadmit(self, waiting: WaitingExecution, at: str) -> bool:
        """Undo an admission whose in-queue message could not be sent: it waits again (the sweep retries)."""
        admitted_here = (ExecutionRecord.admitted_at == at) & (ExecutionRecord.status == ExecutionStatus.QUEUED.value)

        def build(t: TransactWrite) -> None:
            actions: list[Any] = [
                ExecutionRecord.waiting_shard.set(waiting_shard(waiting.execution_id)),
                ExecutionRecord.admitted_at.remove(),
            ]
            t.update(ExecutionRecord(waiting.execution_id), actions=actions, condition=admitted_here)
            counter: list[Any] = [
                AdmissionRecord.active_ids.delete({waiting.execution_id}),
                AdmissionRecord.waiting.add(1),
            ]
            t.update(AdmissionRecord(waiting.user_id), actions=counter)

        return self._transact(f"admission of {waiting.execution_id}", build) is None

    def release(self, user_id: str, execution_id: str, gpu_seconds: float, day: str, expires_at: datetime) -> None:
        """An execution ended: out of the user's admitted set (a no-op if it was never in it), counted into today.

        Idempotent for the set (deleting an absent element changes nothing); the day's counters are reset on the
        first end of a new UTC day (the second variant), so a stale day never adds up.
        """
        common: list[Any] = [
            AdmissionRecord.active_ids.delete({execution_id}),
            AdmissionRecord.expires_at.set(expires_at),
        ]
        same_day: list[Any] = [AdmissionRecord.day_executions.add(1), AdmissionRecord.day_gpu_seconds.add(gpu_seconds)]
        new_day: list[Any] = [
            AdmissionRecord.usage_day.set(day),
            AdmissionRecord.day_executions.set(1),
            AdmissionRecord.day_gpu_seconds.set(gpu_seconds),
        ]
        counter = AdmissionRecord(user_id)
        for _ in range(3):
            if _applied(
                lambda: counter.update(actions=common + same_day, condition=AdmissionRecord.usage_day == day),
                f"admission of {user_id}",
            ):
                return
            other_day = AdmissionRecord.usage_day.does_not_exist() | (AdmissionRecord.usage_day != day)
            if _applied(
                lambda: counter.update(actions=common + new_day, condition=other_day),  # noqa: B023
                f"admission of {user_id}",
            ):
                return
        raise StoreUnavailable(f"the usage of {user_id} kept changing")

    def forget_active(self, user_id: str, execution_ids: set[str]) -> None:
        """Drop ids of ended or deleted executions that a lost release left in the admitted set."""
        if execution_ids:
            counter = AdmissionRecord(user_id)
            _applied(
                lambda: counter.update(
                    actions=[AdmissionRecord.active_ids.delete(execution_ids)],
                    condition=AdmissionRecord.user_id.exists(),
                ),
                f"admission of {user_id}",
            )

    # --- state transitions (each returns the new record, or None when it did not apply) ---

    def _update(self, execution_id: str, actions: list[Any], condition: Condition) -> ExecutionRecord | None:
        record = ExecutionRecord(execution_id)
        guarded = ExecutionRecord.execution_id.exists() & _not_deleted() & condition
        written = _applied(lambda: record.update(actions=actions, condition=guarded), f"execution {execution_id}")
        return None if written is None else record

    def mark_started(self, execution_id: str, user_id: str, at: str) -> ExecutionRecord | None:
        """Admitted QUEUED -> RUNNING with startedAt."""
        actions: list[Any] = [
            ExecutionRecord.status.set(ExecutionStatus.RUNNING.value),
            ExecutionRecord.user_status.set(user_status(user_id, ExecutionStatus.RUNNING)),
            ExecutionRecord.started_at.set(at),
        ]
        condition = _admitted_queued()
        return self._update(execution_id, actions, condition)

    def record_progress(self, execution_id: str, progress: dict[str, Any]) -> ExecutionRecord | None:
        """Progress of a RUNNING execution, only forwards (no index holds it: one write unit)."""
        actions: list[Any] = [
            ExecutionRecord.progress.set(progress),
            ExecutionRecord.progress_percent.set(progress["percent"]),
        ]
        condition = (ExecutionRecord.status == ExecutionStatus.RUNNING.value) & (
            ExecutionRecord.progress_percent.does_not_exist() | (ExecutionRecord.progress_percent < progress["percent"])
        )
        return self._update(execution_id, actions, condition)

    def start_with_progress(
        self, execution_id: str, user_id: str, progress: dict[str, Any], at: str
    ) -> ExecutionRecord | None:
        """A progress event that overtook its started event: admitted QUEUED -> RUNNING with that progress."""
        actions: list[Any] = [
            ExecutionRecord.progress.set(progress),
            ExecutionRecord.progress_percent.set(progress["percent"]),
            ExecutionRecord.status.set(ExecutionStatus.RUNNING.value),
            ExecutionRecord.user_status.set(user_status(user_id, ExecutionStatus.RUNNING)),
            ExecutionRecord.started_at.set(ExecutionRecord.started_at | at),
        ]
        condition = _admitted_queued()
        return self._update(execution_id, actions, condition)

    def finish(
        self,
        execution_id: str,
        user_id: str,
        status: ExecutionStatus,
        at: str,
        *,
        error: dict[str, Any] | None = None,
        result_uri: str | None = None,
        progress: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        from_status: ExecutionStatus | None = None,
    ) -> ExecutionRecord | None:
        """An admitted open execution -> a final state; final states never change again.

        `from_status` narrows the condition to one open status: RUNNING also keeps (or sets) startedAt, QUEUED
        never sets it (a queued execution that ends never started). None: either, and startedAt if it ran.
        """
        actions: list[Any] = [
            ExecutionRecord.status.set(status.value),
            ExecutionRecord.user_status.set(user_status(user_id, status)),
            ExecutionRecord.finished_at.set(at),
        ]
        if from_status is not ExecutionStatus.QUEUED:
            # A finished event that overtook its started event: the execution did run.
            actions.append(ExecutionRecord.started_at.set(ExecutionRecord.started_at | at))
        optional: tuple[tuple[Any, Any], ...] = (
            (ExecutionRecord.error, error),
            (ExecutionRecord.result_uri, result_uri),
            (ExecutionRecord.usage, usage),
        )
        for attribute, value in optional:
            if value is not None:
                actions.append(attribute.set(value))
        if progress is not None:
            actions += [
                ExecutionRecord.progress.set(progress),
                ExecutionRecord.progress_percent.set(progress["percent"]),
            ]
        opened = (
            ExecutionRecord.status.is_in(*_OPEN)
            if from_status is None
            else (ExecutionRecord.status == from_status.value)
        )
        return self._update(execution_id, actions, opened & ExecutionRecord.waiting_shard.does_not_exist())

    def finish_waiting(
        self, record: ExecutionRecord, status: ExecutionStatus, at: str, error: dict[str, Any] | None = None
    ) -> bool:
        """A waiting execution -> a final state (cancel, delete, deadline), with the user's waiting count."""
        actions: list[Any] = [
            ExecutionRecord.status.set(status.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, status)),
            ExecutionRecord.finished_at.set(at),
            ExecutionRecord.waiting_shard.remove(),
        ]
        if status is ExecutionStatus.CANCELLED:
            actions.append(ExecutionRecord.cancel_requested.set(True))
        if error is not None:
            actions.append(ExecutionRecord.error.set(error))
        waiting = ExecutionRecord.waiting_shard.exists() & (ExecutionRecord.status == ExecutionStatus.QUEUED.value)

        def build(t: TransactWrite) -> None:
            t.update(ExecutionRecord(record.execution_id), actions=actions, condition=waiting)
            t.update(AdmissionRecord(record.user_id), actions=[AdmissionRecord.waiting.add(-1)])

        return self._transact(f"execution {record.execution_id}", build) is None

    def cancel_queued(self, record: ExecutionRecord, at: str) -> ExecutionRecord | None:
        """Admitted QUEUED -> CANCELLED at once (it never starts, so no startedAt)."""
        actions: list[Any] = [
            ExecutionRecord.status.set(ExecutionStatus.CANCELLED.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, ExecutionStatus.CANCELLED)),
            ExecutionRecord.finished_at.set(at),
            ExecutionRecord.cancel_requested.set(True),
        ]
        condition = _admitted_queued()
        return self._update(record.execution_id, actions, condition)

    def request_cancel(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """RUNNING -> cancelRequested; the worker stops at its next step."""
        actions: list[Any] = [ExecutionRecord.cancel_requested.set(True)]
        return self._update(record.execution_id, actions, ExecutionRecord.status == ExecutionStatus.RUNNING.value)

    def tombstone(self, execution_id: str, at: str) -> ExecutionRecord | None:
        """DELETE's first write (contract C2): deletedAt on the record; from then on nothing else applies to it."""
        record = ExecutionRecord(execution_id)
        written = _applied(
            lambda: record.update(
                actions=[ExecutionRecord.deleted_at.set(at)], condition=ExecutionRecord.execution_id.exists()
            ),
            f"execution {execution_id}",
        )
        return None if written is None else record

    def end_deleted(self, record: ExecutionRecord, at: str) -> ExecutionRecord | None:
        """An admitted open execution being deleted (tombstoned already) -> CANCELLED, so its slot is freed."""
        actions: list[Any] = [
            ExecutionRecord.status.set(ExecutionStatus.CANCELLED.value),
            ExecutionRecord.user_status.set(user_status(record.user_id, ExecutionStatus.CANCELLED)),
            ExecutionRecord.finished_at.set(at),
            ExecutionRecord.cancel_requested.set(True),
        ]
        condition = ExecutionRecord.status.is_in(*_OPEN) & ExecutionRecord.waiting_shard.does_not_exist()
        written = _applied(
            lambda: record.update(actions=actions, condition=condition), f"execution {record.execution_id}"
        )
        return None if written is None else record
