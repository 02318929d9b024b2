"""Pipelines domain: validation of whole chains, definitions in S3 and metadata in DynamoDB, ratings.

A pipeline's definition (the seed's JSON, stages included) is an S3 object; its record holds what lists need
(name, author, stage count). Ratings and their totals move together in one transaction (`RatingStore.rate`),
retried on conflicts. Collaborators come in `PipelineDeps`, so tests pass in-memory fakes.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from functions.pagination import check_cursor
from functions.pipelines.schemas import CreatePipeline, Pipeline, PipelineSummary, Rating
from functions.pipelines.store import PipelineStore, RatingOutcome, RatingStore, list_partition
from shared.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from shared.ids import is_id
from shared.messages import utc_now_iso
from shared.models import PipelineRecord
from shared.settings import Settings
from shared.stages import (
    PREVIOUS,
    PROMPT_MAX_BYTES,
    StageDefinition,
    family_problems,
    parameters_to_wire,
    parse_parameters,
    previous_problem,
    template_variables,
)
from shared.storage import BlobStore
from shared.uploads import UploadRefused, own_upload, read_prompt

# Concurrent ratings by one user all race for the same item: each round at least one of them wins, so the
# attempts bound how many may race at once before one answers 503; backoff with jitter spreads the rounds.
RATING_ATTEMPTS = 40
RATING_BACKOFF_MAX_S = 0.2
_SORT_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]{8,15}Z#[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class PipelineDeps:
    settings: Settings
    blobs: BlobStore
    pipelines: PipelineStore
    ratings: RatingStore


# --- validation of a whole chain ---


def _stage_problems(
    index: int, stages: list[StageDefinition], user_id: str, deps: PipelineDeps
) -> list[dict[str, Any]]:
    stage, loc = stages[index], ["body", "stages", index]
    problems: list[dict[str, Any]] = []

    def problem(where: list[Any], message: str) -> None:
        problems.append({"loc": loc + where, "message": message, "type": "value_error"})

    try:
        params = parse_parameters(stage.type, stage.parameters)
    except ValidationError as exc:
        for err in exc.errors():
            problem(["parameters", *err["loc"]], err["msg"])
        params = None
    models = deps.settings.models
    if params is not None and params.model and models and params.model not in models:
        problem(["parameters", "model"], f"unknown model; this deployment has: {', '.join(sorted(models))}")
    if params is not None:  # what the model's family cannot do (API.md, "Models")
        wire = parameters_to_wire(params)
        for name, why in family_problems(stage.type, wire, models, deps.settings.default_models):
            problem(["parameters", name], why)
    prompt = _prompt(stage, user_id, deps, lambda message: problem(["body"], message))
    if prompt is not None and PREVIOUS in template_variables(prompt):
        message = previous_problem([s.type for s in stages], index)
        if message is not None:
            problem(["body"], message)
    return problems


def _prompt(stage: StageDefinition, user_id: str, deps: PipelineDeps, problem: Callable[[str], None]) -> str | None:
    """The stage's prompt template: inline, or read from the caller's checked upload; None after a problem."""
    if stage.inline:
        if len(stage.body.encode()) > PROMPT_MAX_BYTES:
            problem(f"an inline prompt is at most {PROMPT_MAX_BYTES} bytes")
            return None
        return stage.body
    try:
        return read_prompt(deps.blobs, own_upload(stage.body, user_id, deps.settings.uploads_bucket))
    except UploadRefused as exc:
        problem(f"inline: false needs an s3:// URI of your own text upload: {exc}")
        return None


# --- views ---


def _rating(totals: tuple[int, int] | None, mine: int | None) -> Rating:
    total, count = totals or (0, 0)
    return Rating(average=round(total / count, 2) if count else None, count=count, mine=mine)


def _pipeline_view(record: PipelineRecord, stages: list[StageDefinition], rating: Rating) -> Pipeline:
    return Pipeline(
        pipelineId=record.pipeline_id,
        name=record.name,
        description=record.description,
        author=record.author,
        authorName=record.author_name,
        createdAt=record.created_at,
        stages=stages,
        rating=rating,
    )


def _record(pipeline_id: str, deps: PipelineDeps) -> PipelineRecord:
    record = deps.pipelines.get(pipeline_id) if is_id(pipeline_id) else None
    if record is None:
        raise NotFound("no such pipeline")
    return record


def _current_rating(pipeline_id: str, user_id: str, deps: PipelineDeps, mine: int | None = None) -> Rating:
    if mine is None:
        mine = deps.ratings.score(pipeline_id, user_id)
    return _rating(deps.ratings.totals([pipeline_id], consistent=True).get(pipeline_id), mine)


# --- create, read, list, delete ---


def create_pipeline(user_id: str, request: CreatePipeline, deps: PipelineDeps) -> Pipeline:
    stages = request.stages
    problems = [p for i in range(len(stages)) for p in _stage_problems(i, stages, user_id, deps)]
    if problems:
        raise ValidationFailed("the pipeline failed validation", details=problems)
    pipeline_id, created_at = str(uuid.uuid4()), utc_now_iso()
    record = PipelineRecord(
        pipeline_id=pipeline_id,
        name=request.name,
        description=request.description,
        author=user_id,
        author_name=deps.pipelines.display_name(user_id),
        created_at=created_at,
        sort_key=f"{created_at}#{pipeline_id}",
        list_partition=list_partition(pipeline_id),
        stage_count=len(stages),
        definition_key=f"pipelines/{pipeline_id}.json",
    )
    view = _pipeline_view(record, stages, _rating(None, None))
    definition = view.model_dump(by_alias=True, exclude={"rating"})
    deps.blobs.put_json(deps.settings.pipelines_bucket, record.definition_key, definition)
    deps.pipelines.create(record)
    return view


def get_pipeline(pipeline_id: str, user_id: str, deps: PipelineDeps) -> Pipeline:
    record = _record(pipeline_id, deps)
    try:
        definition = deps.blobs.get_json(deps.settings.pipelines_bucket, record.definition_key)
    except NotFound:
        raise NotFound("no such pipeline") from None  # deleted between the two reads
    stages = [StageDefinition.model_validate(stage) for stage in definition["stages"]]
    return _pipeline_view(record, stages, _current_rating(pipeline_id, user_id, deps))


def _summaries(records: list[PipelineRecord], user_id: str, deps: PipelineDeps) -> list[PipelineSummary]:
    ids = [r.pipeline_id for r in records]
    mine, totals = deps.ratings.scores(ids, user_id), deps.ratings.totals(ids)
    return [
        PipelineSummary(
            pipelineId=r.pipeline_id,
            name=r.name,
            description=r.description,
            author=r.author,
            authorName=r.author_name,
            createdAt=r.created_at,
            stageCount=int(r.stage_count),
            rating=_rating(totals.get(r.pipeline_id), mine.get(r.pipeline_id)),
        )
        for r in records
    ]


def encode_list_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": sort_key}).encode()).decode()


def decode_list_cursor(cursor: str | None) -> str | None:
    """The sort key a page of all pipelines continues before; BadRequest for a cursor this list did not issue."""
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise BadRequest("invalid cursor") from exc
    before = value.get("before") if isinstance(value, dict) and set(value) == {"before"} else None
    if not isinstance(before, str) or not _SORT_KEY.fullmatch(before):
        raise BadRequest("invalid cursor")
    return before


def list_all_pipelines(
    user_id: str, limit: int, cursor: str | None, deps: PipelineDeps
) -> tuple[list[PipelineSummary], str | None]:
    """All pipelines newest first (merged from the list's shards), and the cursor of the next page."""
    records, more = deps.pipelines.page_all(limit, decode_list_cursor(cursor))
    next_cursor = encode_list_cursor(records[-1].sort_key) if more and records else None
    return _summaries(records, user_id, deps), next_cursor


def list_author_pipelines(
    user_id: str, author: str, limit: int, start: dict[str, Any] | None, deps: PipelineDeps
) -> tuple[list[PipelineSummary], dict[str, Any] | None]:
    """One author's pipelines, newest first."""
    if not is_id(author):  # names nobody, and must not reach DynamoDB's key limits as a 5xx
        return [], None
    check_cursor(start, {"pipelineId", "sortKey", "author"}, "author", author)
    page = deps.pipelines.page_by_author(author, limit, start)
    return _summaries(page.records, user_id, deps), page.last_key


def delete_pipeline(pipeline_id: str, user_id: str, deps: PipelineDeps) -> None:
    """Author only. Executions already made keep running: their request.json holds the resolved stages.

    The record goes first: from then on every rating transaction fails its pipeline check, so the ratings
    deleted after it are all there will be.
    """
    record = _record(pipeline_id, deps)
    if record.author != user_id:
        raise Forbidden("only the pipeline's author can delete it")
    if not deps.pipelines.delete(pipeline_id):
        raise NotFound("no such pipeline")
    deps.blobs.delete_prefix(deps.settings.pipelines_bucket, record.definition_key)
    deps.ratings.delete_all(pipeline_id)


# --- ratings ---


def get_rating(pipeline_id: str, user_id: str, deps: PipelineDeps) -> Rating:
    _record(pipeline_id, deps)
    return _current_rating(pipeline_id, user_id, deps)


def rate_pipeline(pipeline_id: str, user_id: str, score: int, deps: PipelineDeps) -> Rating:
    """One rating per user, changeable; the totals move in the same transaction, retried until it applies."""
    record = _record(pipeline_id, deps)
    if record.author == user_id:
        raise Forbidden("you cannot rate your own pipeline")
    for attempt in range(RATING_ATTEMPTS):
        previous = deps.ratings.score(pipeline_id, user_id)
        if previous == score:
            return _current_rating(pipeline_id, user_id, deps, mine=score)
        outcome = deps.ratings.rate(pipeline_id, user_id, score, previous, utc_now_iso())
        if outcome is RatingOutcome.APPLIED:
            return _current_rating(pipeline_id, user_id, deps, mine=score)
        if outcome is RatingOutcome.PIPELINE_GONE:
            raise NotFound("no such pipeline")
        time.sleep(random.uniform(0, min(RATING_BACKOFF_MAX_S, 0.005 * 2**attempt)))
    raise ServiceUnavailable("the rating kept changing concurrently; try again")
