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


class FakeStore:
    """Records every write; `applies` decides whether the conditional write 'held'."""

    def __init__(self, current: ExecutionRecord | None, applies: bool = True) -> None:
        self.current = current
        self.applies = applies
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def get(self, execution_id: str) -> ExecutionRecord | None:
        return self.current

    def _write(self, name: str, **kwargs: Any) -> ExecutionRecord | None:
        self.writes.append((name, kwargs))
        return self.current if self.applies else None

    def mark_started(self, rec: ExecutionRecord, at: str) -> ExecutionRecord | None:
        return self._write("mark_started", at=at)

    def record_progress(self, rec: ExecutionRecord, progress: dict[str, Any], at: str) -> ExecutionRecord | None:
        return self._write("record_progress", progress=progress, at=at)

    def finish(self, rec: ExecutionRecord, status: ExecutionStatus, at: str, **kwargs: Any) -> ExecutionRecord | None:
        return self._write("finish", status=status, at=at, **kwargs)
