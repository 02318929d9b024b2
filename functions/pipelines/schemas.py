"""Request and response shapes of the pipelines API (API.md, "Pipelines"), camelCase on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.stages import MAX_STAGES, StageDefinition

NAME_MAX_BYTES = 100
DESCRIPTION_MAX_BYTES = 2000


class _Api(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class CreatePipeline(_Api):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_MAX_BYTES)
    description: str = Field(default="", max_length=DESCRIPTION_MAX_BYTES)
    stages: list[StageDefinition] = Field(min_length=1, max_length=MAX_STAGES)

    @field_validator("name", "description")
    @classmethod
    def _utf8_bytes(cls, value: str, info: ValidationInfo) -> str:
        # API.md: text limits count UTF-8 bytes (max_length above counts characters, a weaker bound).
        limit = NAME_MAX_BYTES if info.field_name == "name" else DESCRIPTION_MAX_BYTES
        if len(value.encode()) > limit:
            raise ValueError(f"at most {limit} UTF-8 bytes")
        return value


class Rating(_Api):
    average: float | None = None
    count: int = 0
    mine: int | None = None


class RateRequest(_Api):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5, strict=True)  # strict: true is not a score


class PipelineSummary(_Api):
    pipeline_id: str = Field(alias="pipelineId")
    name: str
    description: str
    author: str
    author_name: str = Field(alias="authorName")
    created_at: str = Field(alias="createdAt")
    stage_count: int = Field(alias="stageCount")
    rating: Rating


class Pipeline(_Api):
    pipeline_id: str = Field(alias="pipelineId")
    name: str
    description: str
    author: str
    author_name: str = Field(alias="authorName")
    created_at: str = Field(alias="createdAt")
    stages: list[StageDefinition]
    rating: Rating


class PipelinePage(_Api):
    items: list[PipelineSummary]
    next_cursor: str | None = Field(default=None, alias="nextCursor")


class StageType(_Api):
    type: str
    description: str
    output: str
    parameters: dict[str, Any]


class StageTypes(_Api):
    items: list[StageType]


class ModelInfo(_Api):
    """A model this deployment serves (API.md, "Models"); the `model` parameter takes its `name`."""

    name: str
    kind: str
    family: str
    stage_types: list[str] = Field(alias="stageTypes")
    default: bool
    loras: list[str]
    defaults: dict[str, Any] = Field(default_factory=dict, description="Parameter defaults of this model")


class ModelList(_Api):
    items: list[ModelInfo]
