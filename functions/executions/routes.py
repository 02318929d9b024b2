"""Routes of the executions API (API.md, "Executions"): each parses the request, makes one domain call, answers.

The domain module is imported when a route first runs: it brings in pynamodb and botocore, which a cold start
would otherwise load at import although only the schemas are needed to route and validate.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.metrics import MetricUnit

from functions.executions.dependencies import execution_deps
from functions.executions.schemas import (
    Execution,
    ExecutionPage,
    ExecutionResult,
    SubmitExecution,
    execution_view,
)
from functions.http import caller_id
from functions.observability import metrics
from functions.openapi import responses
from functions.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor
from shared.telemetry import DIM_STAGE, EXECUTIONS_SUBMITTED

router = APIGatewayRouter()


def _json(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _caller() -> str:
    return caller_id(router)


def _page(page: Page[Any]) -> dict[str, Any]:
    return {"items": [execution_view(r) for r in page.records], "nextCursor": encode_cursor(page.last_key)}


@router.post(
    "/pipelines/<pipelineId>/executions",
    summary="Run a pipeline",
    responses=responses(202, "Queued", 400, 404, 409, 422, 503),
)
def submit(pipelineId: str, body: Annotated[SubmitExecution | None, Body()] = None) -> Response[Execution]:  # noqa: N803
    from functions.executions import logic

    headers = router.current_event.headers or {}
    key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), None)
    submission = logic.Submission(caller_id(router), pipelineId, body or SubmitExecution(), key)  # type: ignore[arg-type]
    deps = execution_deps()
    submitted = logic.submit_execution(submission, deps)
    if submitted.created:
        metrics.add_dimension(name=DIM_STAGE, value=deps.settings.stage)
        metrics.add_metric(name=EXECUTIONS_SUBMITTED, unit=MetricUnit.Count, value=1)
    return _json(202, execution_view(submitted.record))


@router.get(
    "/pipelines/<pipelineId>/executions",
    summary="The caller's executions of a pipeline",
    responses=responses(200, "A page of executions", 400, 422),
)
def list_of_pipeline(pipelineId: str, limit: Limit = 20, cursor: Cursor = None) -> ExecutionPage:  # noqa: N803
    from functions.executions import logic

    page = logic.list_executions(
        _caller(), execution_deps(), limit=limit, start=decode_cursor(cursor), pipeline_id=pipelineId
    )
    return _page(page)  # type: ignore[return-value]


@router.get(
    "/executions",
    summary="The caller's executions, newest first",
    responses=responses(200, "A page of executions", 400, 422),
)
def list_mine(
    limit: Limit = 20,
    cursor: Cursor = None,
    status: Annotated[str | None, Query(description="QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED")] = None,
) -> ExecutionPage:
    from functions.executions import logic

    page = logic.list_executions(_caller(), execution_deps(), limit=limit, start=decode_cursor(cursor), status=status)
    return _page(page)  # type: ignore[return-value]


@router.get("/executions/<executionId>", summary="An execution", responses=responses(200, "The execution", 404))
def get_one(executionId: str) -> Execution:  # noqa: N803
    from functions.executions import logic

    return execution_view(logic.get_own_execution(executionId, _caller(), execution_deps()))  # type: ignore[return-value]


@router.get(
    "/executions/<executionId>/result",
    summary="Outputs of a SUCCEEDED execution",
    responses=responses(200, "Its outputs", 404, 409),
)
def result(executionId: str) -> Response[ExecutionResult]:  # noqa: N803
    from functions.executions import logic

    return _json(200, logic.execution_result(executionId, _caller(), execution_deps()))


@router.post(
    "/executions/<executionId>/cancel",
    summary="Cancel an execution",
    responses=responses(202, "Cancelled, or cancellation requested", 404, 409),
)
def cancel(executionId: str) -> Response[Execution]:  # noqa: N803
    from functions.executions import logic

    return _json(202, execution_view(logic.cancel_execution(executionId, _caller(), execution_deps())))


@router.delete(
    "/executions/<executionId>",
    summary="Delete an execution and its results",
    responses=responses(204, "Deleted", 404),
)
def delete(executionId: str) -> Response[None]:  # noqa: N803
    from functions.executions import logic

    logic.delete_execution(executionId, _caller(), execution_deps())
    return Response(status_code=204)
