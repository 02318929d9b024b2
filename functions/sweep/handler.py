"""Lambda entry point of the admission sweep, invoked by an EventBridge schedule (infra/functions.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executions.dependencies import execution_deps
from functions.observability import capture_lambda_handler, logger


@logger.inject_lambda_context
@capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from functions.sweep.logic import sweep  # the store's pynamodb: loaded on the first run, not at import

    report = sweep(execution_deps())
    if report.timed_out or report.admitted:
        logger.info("sweep", timed_out=len(report.timed_out), admitted=len(report.admitted), users=report.users)
    return {"timedOut": len(report.timed_out), "admitted": len(report.admitted), "users": report.users}
