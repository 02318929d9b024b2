"""Lambda entry point of the executions API: the shared resolver with the executions routes."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response

from functions.executions.routes import router
from functions.http import error_response, make_lambda_handler, make_resolver
from shared.errors import QuotaExceeded

app = make_resolver()
app.include_router(router)


@app.exception_handler(QuotaExceeded)
def _quota_exceeded(exc: QuotaExceeded) -> Response[Any]:
    """429 with Retry-After (API.md "Limits"): the most specific handler, so it wins over the shared one."""
    response = error_response(exc.status, exc.code, exc.message)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


lambda_handler = make_lambda_handler(app)
