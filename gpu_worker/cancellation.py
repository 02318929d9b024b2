"""Whether an execution should stop: cancelled, cancel requested, deleted or final (read from its record).

A deleted execution (CONTRACTS C2) is one whose record is missing or carries `deletedAt`: the API sets it before
purging the execution's S3 prefix, so the worker, which checks again right before writing a stage's outputs or
the manifest (`stop_now`), writes nothing after a delete.

The compute thread asks at every step, so the answer must cost nothing: a background thread re-reads the
records of the executions in hand every `refresh_s`, all of them in one BatchGetItem, and the compute
thread only reads the flags it left. Reads are plain DynamoDB calls on `dynamodb` (a botocore client, or the
worker's I/O process proxy), projected to the four attributes that decide.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import TransientFailure
from shared.messages import FINAL_STATUSES, ExecutionStatus

log = logging.getLogger(__name__)

BATCH_GET_LIMIT = 100  # keys per BatchGetItem
_PROJECTION = {
    "ProjectionExpression": "executionId, #s, cancelRequested, deletedAt",
    "ExpressionAttributeNames": {"#s": "status"},
}


def _gone_or_final(item: dict[str, Any] | None) -> bool:
    if item is None or "deletedAt" in item:
        return True
    return ExecutionStatus(item["status"]["S"]) in FINAL_STATUSES


def _must_stop(item: dict[str, Any] | None) -> bool:
    return _gone_or_final(item) or bool(item and item.get("cancelRequested", {}).get("BOOL"))


class CancellationWatcher:
    """The worker's read-only view of the execution records in `table`: which to skip, which to stop."""

    def __init__(self, dynamodb: Any, table: str, refresh_s: float = 1.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
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
        return _gone_or_final(self._read(execution_id))

    def stop_now(self, execution_id: str) -> bool:
        """A consistent read, right before writing: True when the execution is deleted, final or cancelled."""
        stop = _must_stop(self._read(execution_id))
        with self._lock:
            if stop and execution_id in self._stop_flags:
                self._stop_flags[execution_id] = True
        return stop

    def _read(self, execution_id: str) -> dict[str, Any] | None:
        try:
            response = self._dynamodb.get_item(
                TableName=self._table, Key=self._key(execution_id), ConsistentRead=True, **_PROJECTION
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientFailure(f"could not read execution {execution_id}: {exc}") from exc
        return response.get("Item")  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or self._stopped.is_set()

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
        """Re-read every watched record; a failed or unprocessed read keeps the last answer."""
        with self._lock:
            watched = list(self._stop_flags)
        for first in range(0, len(watched), BATCH_GET_LIMIT):
            chunk = watched[first : first + BATCH_GET_LIMIT]
            try:
                found, unprocessed = self._read_many(chunk)
            except TransientFailure as exc:
                log.warning("could not check %d executions for cancellation: %s", len(chunk), exc)
                continue
            with self._lock:
                for execution_id in chunk:
                    if execution_id in self._stop_flags and execution_id not in unprocessed:
                        self._stop_flags[execution_id] = _must_stop(found.get(execution_id))

    def _read_many(self, execution_ids: list[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The items found, by execution id, and the ids DynamoDB left unprocessed (throttled)."""
        request = {"Keys": [self._key(e) for e in execution_ids], "ConsistentRead": True, **_PROJECTION}
        try:
            response = self._dynamodb.batch_get_item(RequestItems={self._table: request})
        except (ClientError, BotoCoreError) as exc:
            raise TransientFailure(f"could not read executions: {exc}") from exc
        items = response.get("Responses", {}).get(self._table, [])
        left = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        return {i["executionId"]["S"]: i for i in items}, {k["executionId"]["S"] for k in left}

    @staticmethod
    def _key(execution_id: str) -> dict[str, Any]:
        return {"executionId": {"S": execution_id}}

    def _run(self) -> None:
        while not self._stopped.wait(self._refresh_s):
            try:
                self.refresh()
            except Exception:  # a stale flag for a second is harmless; a dead watcher is not
                log.exception("cancellation check failed")
