"""The executions API's request and response shapes (API.md, "Executions"): pydantic models, camelCase on the wire.

Records never leave the service: `execution_view` is the one mapping from an `ExecutionRecord` to the API's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from shared.messages import ErrorInfo, ExecutionStatus, ExecutionUsage, Progress

if TYPE_CHECKING:
    from shared.models import ExecutionRecord  # pynamodb: not loaded when only the API shapes are needed


class _Api(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class SubmitExecution(_Api):
    """`POST /pipelines/{pipelineId}/executions` body; every field is optional."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    variables: dict[str, str] = Field(default_factory=dict, description="Values of {{name}} templates; image=s3://…")
    backend: str | None = Field(default=None, max_length=100, description="Inference backend; default gpu-fleet")
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-stage parameter overrides, keyed by 0-based stage index"
    )
    # Webhooks (API.md, "Events: wait, webhooks, backends"); the address is checked in functions.webhooks.
    webhook: str | None = Field(default=None, min_length=1, max_length=2048, description="https:// URL for events")
    webhook_events: list[Literal["started", "progress", "completed"]] | None = Field(
        default=None, alias="webhookEvents", min_length=1, max_length=3, description='Default: ["completed"]'
    )


class Execution(_Api):
    execution_id: str = Field(alias="executionId")
    pipeline_id: str = Field(alias="pipelineId")
    user_id: str = Field(alias="userId")
    backend: str
    status: ExecutionStatus
    progress: Progress | None = None
    error: ErrorInfo | None = None
    created_at: str = Field(alias="createdAt")
    started_at: str | None = Field(default=None, alias="startedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    cancel_requested: bool = Field(default=False, alias="cancelRequested")
    usage: ExecutionUsage | None = Field(default=None, description="Device time, once the execution is final")


class ExecutionPage(_Api):
    items: list[Execution]
    next_cursor: str | None = Field(default=None, alias="nextCursor")


class Output(_Api):
    stage: int
    index: int
    type: Literal["text", "image"]
    content_type: str = Field(alias="contentType")
    text: str | None = Field(default=None, description="Text outputs, inline")
    url: str | None = Field(default=None, description="Presigned GET (images, and text stored as a file)")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # API.md: `text` and `url` are present only when they apply.
        return {k: v for k, v in handler(self).items() if v is not None or k not in {"text", "url"}}


class ExecutionResult(_Api):
    execution_id: str = Field(alias="executionId")
    outputs: list[Output]
    expires_in: int = Field(alias="expiresIn")


class UsageLimits(_Api):
    max_active_executions: int = Field(alias="maxActiveExecutions")
    max_queued_executions: int = Field(alias="maxQueuedExecutions")
    daily_gpu_seconds: float | None = Field(alias="dailyGpuSeconds")


class UserUsage(_Api):
    """`GET /users/me/usage`: today's (UTC) ended executions and GPU seconds, and the caller's open ones."""

    day: str
    executions: int
    gpu_seconds: float = Field(alias="gpuSeconds")
    active: int
    waiting: int
    limits: UsageLimits


class Backend(_Api):
    name: str
    queued: int
    running: int
    workers: int
    estimated_wait_seconds: int | None = Field(alias="estimatedWaitSeconds")


class BackendList(_Api):
    items: list[Backend]


_NO_USAGE = {"gpuSeconds": 0.0, "stages": []}


def _progress(record: ExecutionRecord) -> dict[str, Any] | None:
    """Stored progress; a SUCCEEDED execution shows its last stage and step at 100 % (never written as such)."""
    progress = record.progress
    if record.status != ExecutionStatus.SUCCEEDED:
        return progress  # type: ignore[no-any-return]
    base: dict[str, Any] = dict(progress or {"stage": 1, "stages": 1, "step": 0, "steps": 0})
    base["stages"] = max(int(base.get("stages") or 1), 1)
    base["stage"] = base["stages"]
    base["step"] = base.get("steps", 0)
    base["percent"] = 100
    return base


def execution_view(record: ExecutionRecord) -> dict[str, Any]:
    """The API's execution object for a record (every key present; absent times and errors are null)."""
    final = ExecutionStatus(record.status).is_final
    return {
        "executionId": record.execution_id,
        "pipelineId": record.pipeline_id,
        "userId": record.user_id,
        "backend": record.backend,
        "status": record.status,
        "progress": _progress(record),
        "error": record.error,
        "createdAt": record.created_at,
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
        "cancelRequested": bool(record.cancel_requested),
        "usage": (record.usage or _NO_USAGE) if final else None,
    }
