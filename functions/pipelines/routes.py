"""Routes of the pipelines API (API.md, "Pipelines"): parse, one domain call, answer.

The domain module is imported when a route first needs it: it brings in pynamodb and botocore, which a cold
start would otherwise load at import although only the schemas are needed to route and validate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from functions.bound import current_settings
from functions.http import caller_id
from functions.openapi import responses
from functions.pagination import Cursor, Limit, decode_cursor, encode_cursor
from functions.pipelines.schemas import (
    CreatePipeline,
    ModelList,
    Pipeline,
    PipelinePage,
    PipelineSummary,
    RateRequest,
    Rating,
    StageTypes,
)
from shared.aws import client
from shared.stages import models_document, stage_types_document

if TYPE_CHECKING:
    from functions.pipelines.logic import PipelineDeps

router = APIGatewayRouter()


def _deps() -> PipelineDeps:
    from functions.pipelines.logic import PipelineDeps
    from functions.pipelines.store import PipelineStore, RatingStore
    from shared.storage import BlobStore

    settings = current_settings()
    return PipelineDeps(
        settings=settings,
        blobs=BlobStore(client("s3", settings)),
        pipelines=PipelineStore(),
        ratings=RatingStore(settings),
    )


def _json(status: int, model: Any) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=model.model_dump(by_alias=True)
    )


def _page(items: list[PipelineSummary], next_cursor: str | None) -> Response[PipelinePage]:
    return _json(200, PipelinePage(items=items, nextCursor=next_cursor))


@router.get("/stage-types", summary="Stage types and their parameters", responses=responses(200, "Stage types"))
def stage_types() -> Response[StageTypes]:
    return _json(200, StageTypes.model_validate({"items": stage_types_document()}))


@router.get("/models", summary="The models this deployment serves", responses=responses(200, "Models"))
def models() -> Response[ModelList]:
    settings = current_settings()
    return _json(200, ModelList.model_validate({"items": models_document(settings.models, settings.default_models)}))


@router.post("/pipelines", summary="Create a pipeline", responses=responses(201, "Created", 400))
def create(body: Annotated[CreatePipeline, Body()]) -> Response[Pipeline]:
    from functions.pipelines import logic

    return _json(201, logic.create_pipeline(caller_id(router), body, _deps()))


@router.get("/pipelines", summary="All pipelines, newest first", responses=responses(200, "A page", 400))
def list_all(limit: Limit = 20, cursor: Cursor = None) -> Response[PipelinePage]:
    from functions.pipelines import logic

    return _page(*logic.list_all_pipelines(caller_id(router), limit, cursor, _deps()))


@router.get(
    "/users/<userId>/pipelines", summary="One user's pipelines ('me' allowed)", responses=responses(200, "A page", 400)
)
def list_by_user(userId: str, limit: Limit = 20, cursor: Cursor = None) -> Response[PipelinePage]:  # noqa: N803
    from functions.pipelines import logic

    caller = caller_id(router)
    author = caller if userId == "me" else userId
    items, last_key = logic.list_author_pipelines(caller, author, limit, decode_cursor(cursor), _deps())
    return _page(items, encode_cursor(last_key))


@router.get("/pipelines/<pipelineId>", summary="A pipeline", responses=responses(200, "The pipeline", 404))
def get_one(pipelineId: str) -> Response[Pipeline]:  # noqa: N803
    from functions.pipelines import logic

    return _json(200, logic.get_pipeline(pipelineId, caller_id(router), _deps()))


@router.delete(
    "/pipelines/<pipelineId>", summary="Delete a pipeline (author only)", responses=responses(204, "Deleted", 403, 404)
)
def delete(pipelineId: str) -> Response[None]:  # noqa: N803
    from functions.pipelines import logic

    logic.delete_pipeline(pipelineId, caller_id(router), _deps())
    return Response(status_code=204)


@router.get("/pipelines/<pipelineId>/rating", summary="A pipeline's rating", responses=responses(200, "Rating", 404))
def rating(pipelineId: str) -> Response[Rating]:  # noqa: N803
    from functions.pipelines import logic

    return _json(200, logic.get_rating(pipelineId, caller_id(router), _deps()))


@router.put(
    "/pipelines/<pipelineId>/rating",
    summary="Rate another user's pipeline (1-5)",
    responses=responses(200, "Rating", 400, 403, 404),
)
def rate(pipelineId: str, body: Annotated[RateRequest, Body()]) -> Response[Rating]:  # noqa: N803
    from functions.pipelines import logic

    return _json(200, logic.rate_pipeline(pipelineId, caller_id(router), body.score, _deps()))
