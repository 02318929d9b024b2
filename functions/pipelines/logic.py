"""Pipelines domain: validation of stages, definitions in S3 and metadata in DynamoDB, ratings.

A pipeline's definition (the seed's JSON, stages included) is an S3 object; its record holds what lists
need (name, author, stage count) and the rating aggregates, kept consistent with the ratings by transactions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from functions.pagination import Page, check_cursor, query_page
from functions.pipelines.schemas import CreatePipeline, Pipeline, PipelineSummary, Rating
from shared.errors import Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from shared.messages import utc_now_iso
from shared.models import PipelineRecord, RatingRecord, UserRecord
from shared.settings import Settings
from shared.stages import (
    PREVIOUS,
    PROMPT_MAX_BYTES,
    StageDefinition,
    family_problems,
    parameters_to_wire,
    parse_parameters,
    template_variables,
)
from shared.storage import BlobStore, S3Uri

RATING_RETRIES = 3
_ALL = "ALL"


@dataclass(frozen=True)
class PipelineDeps:
    settings: Settings
    blobs: BlobStore


def upload_prefix(user_id: str) -> str:
    """Where a user's uploads live in the uploads bucket; only these may be referenced by that user."""
    return f"uploads/{user_id}/"


def is_own_upload(uri: str, user_id: str, settings: Settings) -> bool:
    try:
        location = S3Uri.parse(uri)
    except ValueError:
        return False
    return location.bucket == settings.uploads_bucket and location.key.startswith(upload_prefix(user_id))


def _is_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _stage_problems(index: int, stage: StageDefinition, user_id: str, deps: PipelineDeps) -> list[dict[str, Any]]:
    loc = ["body", "stages", index]
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
        for name, message in family_problems(stage.type, wire, models, deps.settings.default_models):
            problem(["parameters", name], message)
    if stage.inline:
        if len(stage.body.encode()) > PROMPT_MAX_BYTES:
            problem(["body"], f"an inline prompt is at most {PROMPT_MAX_BYTES} bytes")
        if index == 0 and PREVIOUS in template_variables(stage.body):
            problem(["body"], "the first stage has no previous output")
    elif not is_own_upload(stage.body, user_id, deps.settings):
        problem(["body"], "inline: false needs an s3:// URI from POST /uploads by the same user")
    else:
        location = S3Uri.parse(stage.body)
        if deps.blobs.head(location.bucket, location.key) is None:
            problem(["body"], "the upload has not been uploaded yet")
    return problems


def _author_name(user_id: str) -> str:
    for user in UserRecord.by_user_id.query(user_id, limit=1):
        return user.display_name
    return ""


def _rating(record: PipelineRecord, mine: int | None) -> Rating:
    count = int(record.rating_count or 0)
    average = round(float(record.rating_sum) / count, 2) if count else None
    return Rating(average=average, count=count, mine=mine)


def _my_score(pipeline_id: str, user_id: str) -> int | None:
    try:
        return int(RatingRecord.get(pipeline_id, user_id, consistent_read=True).score)
    except DoesNotExist:
        return None


def _pipeline_view(record: PipelineRecord, stages: list[StageDefinition], mine: int | None) -> Pipeline:
    return Pipeline(
        pipelineId=record.pipeline_id,
        name=record.name,
        description=record.description,
        author=record.author,
        authorName=record.author_name,
        createdAt=record.created_at,
        stages=stages,
        rating=_rating(record, mine),
    )


def create_pipeline(user_id: str, request: CreatePipeline, deps: PipelineDeps) -> Pipeline:
    problems = [p for i, stage in enumerate(request.stages) for p in _stage_problems(i, stage, user_id, deps)]
    if problems:
        raise ValidationFailed("the pipeline failed validation", details=problems)
    pipeline_id, created_at = str(uuid.uuid4()), utc_now_iso()
    record = PipelineRecord(
        pipeline_id=pipeline_id,
        name=request.name,
        description=request.description,
        author=user_id,
        author_name=_author_name(user_id),
        created_at=created_at,
        sort_key=f"{created_at}#{pipeline_id}",
        list_partition=_ALL,
        stage_count=len(request.stages),
        definition_key=f"pipelines/{pipeline_id}.json",
    )
    view = _pipeline_view(record, request.stages, None)
    definition = view.model_dump(by_alias=True, exclude={"rating"})
    deps.blobs.put_json(deps.settings.pipelines_bucket, record.definition_key, definition)
    record.save()
    return view


def _record(pipeline_id: str) -> PipelineRecord:
    if not _is_id(pipeline_id):
        raise NotFound("no such pipeline")
    try:
        return PipelineRecord.get(pipeline_id, consistent_read=True)
    except DoesNotExist:
        raise NotFound("no such pipeline") from None


def get_pipeline(pipeline_id: str, user_id: str, deps: PipelineDeps) -> Pipeline:
    record = _record(pipeline_id)
    try:
        definition = deps.blobs.get_json(deps.settings.pipelines_bucket, record.definition_key)
    except NotFound:
        raise NotFound("no such pipeline") from None  # deleted between the two reads
    stages = [StageDefinition.model_validate(stage) for stage in definition["stages"]]
    return _pipeline_view(record, stages, _my_score(pipeline_id, user_id))


def _summaries(page: Page[PipelineRecord], user_id: str) -> list[PipelineSummary]:
    keys = [(r.pipeline_id, user_id) for r in page.records]
    mine = {r.pipeline_id: int(r.score) for r in RatingRecord.batch_get(keys)} if keys else {}
    return [
        PipelineSummary(
            pipelineId=r.pipeline_id,
            name=r.name,
            description=r.description,
            author=r.author,
            authorName=r.author_name,
            createdAt=r.created_at,
            stageCount=int(r.stage_count),
            rating=_rating(r, mine.get(r.pipeline_id)),
        )
        for r in page.records
    ]


def list_pipelines(
    user_id: str, limit: int, start: dict[str, Any] | None, author: str | None = None
) -> tuple[list[PipelineSummary], dict[str, Any] | None]:
    """All pipelines, or one author's, newest first."""
    if author is None:
        check_cursor(start, {"pipelineId", "sortKey", "listPartition"}, "listPartition", _ALL)
        page = query_page(PipelineRecord.all_pipelines, _ALL, ("pipelineId", "listPartition", "sortKey"), limit, start)
    else:
        if not _is_id(author):  # names nobody, and must not reach DynamoDB's key limits as a 5xx
            return [], None
        check_cursor(start, {"pipelineId", "sortKey", "author"}, "author", author)
        page = query_page(PipelineRecord.by_author, author, ("pipelineId", "author", "sortKey"), limit, start)
    return _summaries(page, user_id), page.last_key


def delete_pipeline(pipeline_id: str, user_id: str, deps: PipelineDeps) -> None:
    """Author only. Executions already made keep running: their request.json holds the resolved stages."""
    record = _record(pipeline_id)
    if record.author != user_id:
        raise Forbidden("only the pipeline's author can delete it")
    try:
        record.delete(condition=PipelineRecord.pipeline_id.exists())
    except DeleteError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            raise NotFound("no such pipeline") from exc
        raise ServiceUnavailable("could not delete the pipeline") from exc
    deps.blobs.delete_prefix(deps.settings.pipelines_bucket, record.definition_key)
    with RatingRecord.batch_write() as batch:
        for rating in RatingRecord.query(pipeline_id):
            batch.delete(rating)


def get_rating(pipeline_id: str, user_id: str) -> Rating:
    return _rating(_record(pipeline_id), _my_score(pipeline_id, user_id))


def rate_pipeline(pipeline_id: str, user_id: str, score: int, settings: Settings) -> Rating:
    """One rating per user, changeable; the aggregates move in the same transaction as the rating."""
    record = _record(pipeline_id)
    if record.author == user_id:
        raise Forbidden("you cannot rate your own pipeline")
    connection = Connection(region=settings.region, host=settings.aws_endpoint_url)
    for _ in range(RATING_RETRIES):
        previous = _my_score(pipeline_id, user_id)
        rating = RatingRecord(pipeline_id=pipeline_id, user_id=user_id, score=score, updated_at=utc_now_iso())
        try:
            with TransactWrite(connection=connection) as transaction:
                if previous is None:
                    transaction.save(rating, condition=RatingRecord.user_id.does_not_exist())
                    actions = [PipelineRecord.rating_sum.add(score), PipelineRecord.rating_count.add(1)]
                else:
                    transaction.save(rating, condition=RatingRecord.score == previous)
                    actions = [PipelineRecord.rating_sum.add(score - previous)]
                transaction.update(record, actions=actions, condition=PipelineRecord.pipeline_id.exists())
        except TransactWriteError as exc:
            if not any(r is not None and r.code == "ConditionalCheckFailed" for r in exc.cancellation_reasons):
                raise ServiceUnavailable("could not store the rating") from exc
            continue  # a concurrent rating by the same user, or the pipeline was deleted: read again
        return _rating(_record(pipeline_id), score)
    raise ServiceUnavailable("the rating changed concurrently; try again")
