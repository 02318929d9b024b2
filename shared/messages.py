"""The queue wire contract between the API and the GPU fleet (API.md, "Queue messages"), version 1.

In-queue: the seed's `{"resUri", "executionId"}` plus `version`. Out-queue: the worker's `started`,
`progress` and `finished` events. `parse_*` turn a raw body into a model or raise `PoisonMessage`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import PoisonMessage

MESSAGE_VERSION: Literal[1] = 1


def utc_now_iso() -> str:
    """Times everywhere are ISO 8601 UTC with a Z (API.md); milliseconds keep ordering stable."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExecutionStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Progress(_Wire):
    """Where an execution is: stage `stage` (1-based, for people) of `stages`, step of steps, overall %."""

    stage: int = Field(ge=0)
    stages: int = Field(ge=1)
    step: int = Field(default=0, ge=0)
    steps: int = Field(default=0, ge=0)
    percent: int = Field(ge=0, le=100)


class ErrorInfo(_Wire):
    code: str
    message: str


class InQueueMessage(_Wire):
    execution_id: str = Field(alias="executionId", min_length=1)
    res_uri: str = Field(alias="resUri", pattern=r"^s3://[^/]+/.+")
    version: Literal[1] = MESSAGE_VERSION


class StageUsage(_Wire):
    stage: int = Field(ge=0)  # 0-based stage index
    seconds: float = Field(ge=0)  # time this stage's model calls held the device (batch time split evenly)


class ExecutionUsage(_Wire):
    gpu_seconds: float = Field(ge=0, alias="gpuSeconds")
    stages: list[StageUsage] = Field(default_factory=list)


class OutEvent(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    FINISHED = "finished"


class OutQueueMessage(_Wire):
    execution_id: str = Field(alias="executionId", min_length=1)
    execution_uri: str | None = Field(default=None, alias="executionUri")
    success: bool = False
    version: Literal[1] = MESSAGE_VERSION
    event: OutEvent
    # With event "finished": the final status (SUCCEEDED, FAILED or CANCELLED); derived from success if absent.
    status: ExecutionStatus | None = None
    progress: Progress | None = None
    error: ErrorInfo | None = None
    at: str = Field(default_factory=utc_now_iso)
    usage: ExecutionUsage | None = None  # contract C1: on finished events
    # Optional: the execution's owner (request.json's userId), so the consumer writes without reading first.
    user_id: str | None = Field(default=None, alias="userId")

    @model_validator(mode="after")
    def _final_status(self) -> OutQueueMessage:
        if self.event is OutEvent.FINISHED and self.status is None:
            self.status = ExecutionStatus.SUCCEEDED if self.success else ExecutionStatus.FAILED
        if self.event is OutEvent.FINISHED and not self.status.is_final:  # type: ignore[union-attr]
            raise ValueError("a finished event needs a final status")
        return self

    def to_json(self) -> str:
        # executionUri is part of the seed's format: always present, null on failure.
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["executionUri"] = self.execution_uri
        return json.dumps(data)


def _parse(model: type[_Wire], body: str | bytes | dict[str, Any]) -> Any:
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else body
        return model.model_validate(data)
    except (ValueError, ValidationError, TypeError) as exc:
        raise PoisonMessage(f"not a valid {model.__name__}: {exc}") from exc


def parse_in_message(body: str | bytes | dict[str, Any]) -> InQueueMessage:
    return _parse(InQueueMessage, body)  # type: ignore[no-any-return]


def parse_out_message(body: str | bytes | dict[str, Any]) -> OutQueueMessage:
    return _parse(OutQueueMessage, body)  # type: ignore[no-any-return]
