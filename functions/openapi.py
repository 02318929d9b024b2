"""What every route documents in the OpenAPI document: its success and API.md's error body for each error."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

ERROR_TEXT = {
    400: "Malformed JSON or query",
    401: "Missing or invalid access token",
    403: "Authenticated but not allowed",
    404: "Not found (or not the caller's)",
    409: "Conflict with the current state",
    413: "Body too large",
    422: "Validation failed",
    429: "Throttled",
    503: "A dependency is unavailable; retry",
}


class ErrorBody(BaseModel):
    """API.md's error body (documentation only: `functions.http` builds the real ones)."""

    code: str
    message: str
    details: list[dict[str, Any]] | None = None


def responses(status: int, description: str, *errors: int, public: bool = False) -> dict[int, OpenAPIResponse]:
    """The documented answers of a route: the success (schema from the return type) and its errors.

    Every authorized route can answer 401; `public` routes (no token) don't list it.
    """
    documented: dict[int, OpenAPIResponse] = {status: OpenAPIResponse(description=description)}
    if status == 204:
        documented[status]["content"] = {}
    for code in sorted({*errors, 422} | (set() if public else {401})):
        documented[code] = OpenAPIResponse(
            description=ERROR_TEXT[code], content={"application/json": {"model": ErrorBody}}
        )
    return documented
