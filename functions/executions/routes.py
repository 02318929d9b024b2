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
    BackendList,
    Execution,
    ExecutionPage,
    ExecutionResult,
    SubmitExecution,
    UserUsage,
    execution_view,
)
from functions.http import caller_id
from functions.observability import metrics
from functions.openapi import responses
from functions.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor
from shared.telemetry import DIM_STAGE, EXECUTIONS_SUBMITTED

router = APIGatewayRouter()
WAIT_MAX_S = 25  # API.md: 1 <= N <= 25
WAIT_MARGIN_S = 2.0  # left of the invocation after a wait, to answer


def _json(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _caller() -> str:
    return caller_id(router)


def _header(name: str) -> str | None:
    headers = router.current_event.headers or {}
    return next((v for k, v in headers.items() if k.lower() == name), None)


def preferred_wait(prefer: str | None) -> int | None:
    """`Prefer: wait=N` (RFC 7240), N seconds capped to 1-25; None without it (or with no valid wait)."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit() and int(value) >= 1:
            return min(int(value), WAIT_MAX_S)
    return None


def _wait_budget(wanted: int) -> float:
    """The wait asked for, within what is left of this invocation (API Gateway answers 504 at 29 s)."""
    context = router.lambda_context
    remaining_s = context.get_remaining_time_in_millis() / 1000 if context is not None else float(wanted)
    return max(0.0, min(float(wanted), remaining_s - WAIT_MARGIN_S))


def _answer(status: int, body: Any, wait: int | None) -> Response[Any]:
    response = _json(status, body)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    return response


def _page(page: Page[Any]) -> dict[str, Any]:
    return {"items": [execution_view(r) for r in page.records], "nextCursor": encode_cursor(page.last_key)}


@router.post(
    "/pipelines/<pipelineId>/executions",
    summary="Run a pipeline",
    responses=responses(
        202, "Queued (admitted, or waiting behind the caller's earlier executions)", 400, 404, 409, 422, 429, 503
    ),
)
def submit(pipelineId: str, body: Annotated[SubmitExecution | None, Body()] = None) -> Response[Execution]:  # noqa: N803
    from functions.executions import logic

    key = _header("idempotency-key")
    wait = preferred_wait(_header("prefer"))
    submission = logic.Submission(caller_id(router), pipelineId, body or SubmitExecution(), key)  # type: ignore[arg-type]
    deps = execution_deps()
    submitted = logic.submit_execution(submission, deps)
    if submitted.created:
        metrics.add_dimension(name=DIM_STAGE, value=deps.settings.stage)
        metrics.add_metric(name=EXECUTIONS_SUBMITTED, unit=MetricUnit.Count, value=1)
    record = submitted.record
    if wait is not None:
        record = logic.wait_until_final(record, deps, _wait_budget(wait))
    return _answer(202, execution_view(record), wait)


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
def get_one(executionId: str) -> Response[Execution]:  # noqa: N803
    from functions.executions import logic

    wait = preferred_wait(_header("prefer"))
    deps = execution_deps()
    record = logic.get_own_execution(executionId, _caller(), deps)
    if wait is not None:
        record = logic.wait_until_final(record, deps, _wait_budget(wait))
    return _answer(200, execution_view(record), wait)


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


@router.get(
    "/users/me/usage",
    summary="The caller's usage today and open executions, with the limits",
    responses=responses(200, "Usage"),
)
def usage() -> UserUsage:
    from functions.executions import logic

    return logic.user_usage(_caller(), execution_deps())  # type: ignore[return-value]


@router.get(
    "/backends",
    summary="Each backend's queue, running executions, workers and estimated wait",
    responses=responses(200, "Backends", 503),
)
def backends() -> BackendList:
    from functions.executions import logic

    _caller()
    return logic.backend_status(execution_deps())  # type: ignore[return-value]
