"""In-memory stand-ins for the executions' collaborators, for unit tests with no network."""

from __future__ import annotations

from typing import Any

from shared.messages import ExecutionStatus
from shared.models import ExecutionRecord
from shared.settings import StackSettings


def unit_settings(**overrides: Any) -> StackSettings:
    """Settings of both sides for unit tests (API fields and worker fields), with placeholder resource names."""
    values: dict[str, Any] = {
        "users_table": "u",
        "refresh_tokens_table": "r",
        "pipelines_table": "p",
        "ratings_table": "ra",
        "executions_table": "e",
        "idempotency_table": "i",
        "admission_table": "a",
        "pipelines_bucket": "pipelines",
        "uploads_bucket": "uploads",
        "results_bucket": "results",
        "backend_queues": {"gpu-fleet": "https://sqs/q"},
        "in_queue_url": "https://sqs/q",
        "out_queue_url": "https://sqs/out",
    }
    return StackSettings(**(values | overrides))


def record(status: ExecutionStatus = ExecutionStatus.QUEUED, **fields: Any) -> ExecutionRecord:
    values: dict[str, Any] = {
        "pipeline_id": "p1",
        "user_id": "u1",
        "backend": "gpu-fleet",
        "status": status.value,
        "progress": {"stage": 0, "stages": 2, "step": 0, "steps": 0, "percent": 0},
        "created_at": "2026-01-01T00:00:00.000Z",
        "request_uri": "s3://results/executions/e1/request.json",
        "sort_key": "2026-01-01T00:00:00.000Z#e1",
        "user_status": f"u1#{status.value}",
        "pipeline_user": "p1#u1",
    }
    return ExecutionRecord("e1", **(values | fields))


class FakeBlobs:
    """S3 as far as the consumers use it: prefix deletions are recorded."""

    def __init__(self) -> None:
        self.purged: list[str] = []

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        self.purged.append(prefix)
        return 0


class FakeStore:
    """One execution; each conditional write applies as DynamoDB's condition would on `current`'s status.

    Records every write attempted (applied or not) and every release of a slot.
    """

    def __init__(self, current: ExecutionRecord | None) -> None:
        self.current = current
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.released: list[tuple[str, str, float]] = []

    def _status(self) -> ExecutionStatus | None:
        return ExecutionStatus(self.current.status) if self.current is not None else None

    def _write(self, name: str, applies: bool, **kwargs: Any) -> ExecutionRecord | None:
        self.writes.append((name, kwargs))
        return self.current if applies and self.current is not None else None

    def get(self, execution_id: str) -> ExecutionRecord | None:
        return self.current

    def user_of(self, execution_id: str) -> str | None:
        return self.current.user_id if self.current is not None else None

    def admission(self, user_id: str) -> None:
        return None  # nobody waits: admitting the next is a no-op

    def release(self, user_id: str, execution_id: str, gpu_seconds: float, day: str, expires_at: Any) -> None:
        self.released.append((user_id, execution_id, gpu_seconds))

    def mark_started(self, execution_id: str, user_id: str, at: str) -> ExecutionRecord | None:
        return self._write("mark_started", self._status() is ExecutionStatus.QUEUED, at=at)

    def record_progress(self, execution_id: str, progress: dict[str, Any]) -> ExecutionRecord | None:
        return self._write("record_progress", self._status() is ExecutionStatus.RUNNING, progress=progress)

    def start_with_progress(
        self, execution_id: str, user_id: str, progress: dict[str, Any], at: str
    ) -> ExecutionRecord | None:
        applies = self._status() is ExecutionStatus.QUEUED
        return self._write("start_with_progress", applies, progress=progress, at=at)

    def finish(
        self, execution_id: str, user_id: str, status: ExecutionStatus, at: str, **kwargs: Any
    ) -> ExecutionRecord | None:
        current, wanted = self._status(), kwargs.get("from_status")
        applies = current is not None and not current.is_final and wanted in (None, current)
        return self._write("finish", applies, status=status, at=at, **kwargs)


def fake_deps(store: FakeStore, **settings: Any) -> Any:
    from functions.executions.logic import ExecutionDeps

    values = {"progress_write_interval_s": 0.0} | settings  # throttling is tested on its own
    return ExecutionDeps(unit_settings(**values), store, FakeBlobs(), None)  # type: ignore[arg-type]
