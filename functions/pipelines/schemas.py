"""Request and response shapes of the pipelines API (API.md, "Pipelines"), camelCase on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.stages import MAX_STAGES, StageDefinition


class _Api(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class CreatePipeline(_Api):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    stages: list[StageDefinition] = Field(min_length=1, max_length=MAX_STAGES)


class Rating(_Api):
    average: float | None = None
    count: int = 0
    mine: int | None = None


class RateRequest(_Api):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5)


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
