"""The HTTP layer every API handler shares: the resolver, error mapping to API.md's body, the caller's id.

A handler module builds its resolver with `make_resolver()`, includes its routers and exposes
`lambda_handler = make_lambda_handler(app)`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.cors import with_cors
from functions.observability import LambdaHandler, capture_lambda_handler, logger, metrics
from functions.request_body import body_problem
from shared.errors import StagehubError, Unauthorized


def error_response(
    status: int, code: str, message: str, details: list[Any] | None = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "message": str(err.get("msg", "")), "type": err.get("type")}
        for err in exc.errors()
    ]


def make_resolver() -> APIGatewayRestResolver:
    """A REST resolver with pydantic validation and API.md's error bodies for every failure."""
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(StagehubError)
    def _domain_error(exc: StagehubError) -> Response[Any]:
        if exc.status >= 500:
            logger.exception("dependency failure")
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response[Any]:
        details = _validation_details(exc)
        if any(d["type"] in {"json_invalid", "model_attributes_type"} and d["loc"][:1] == ["body"] for d in details):
            return error_response(400, "BAD_REQUEST", "the body is not a JSON object", details)
        if any(d["loc"][:1] == ["query"] for d in details) and all(d["loc"][:1] != ["body"] for d in details):
            return error_response(422, "VALIDATION_FAILED", "invalid query parameters", details)
        return error_response(422, "VALIDATION_FAILED", "the request failed validation", details)

    @app.not_found
    def _not_found(exc: NotFoundError) -> Response[Any]:
        return error_response(404, "NOT_FOUND", "no such route")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[Any]:
        logger.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "internal error")

    @app.exception_handler(UnicodeDecodeError)
    def _undecodable(exc: UnicodeDecodeError) -> Response[Any]:
        # A body that is not UTF-8 (it arrives base64-encoded) fails in Powertools' body parsing: bad input, not a 500.
        if not _body_is_utf8(app):
            return error_response(400, "BAD_REQUEST", "the body is not UTF-8 JSON")
        return _unexpected(exc)

    return app


def _body_is_utf8(app: APIGatewayRestResolver) -> bool:
    event = app.current_event
    if not (event.is_base64_encoded and event.body):
        return True
    try:
        base64.b64decode(event.body).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return True


def source_ip(app: APIGatewayRestResolver | APIGatewayRouter) -> str:
    """The client's address as API Gateway saw it (`requestContext.identity.sourceIp`; always there in AWS)."""
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    return str(identity.get("sourceIp") or "unknown")


def caller_id(app: APIGatewayRestResolver | APIGatewayRouter) -> str:
    """The authenticated user's id, put into the request context by the authorizer (resolver or router)."""
    authorizer = app.current_event.request_context.authorizer
    user_id = authorizer.get("userId") if authorizer else None
    if not user_id:
        raise Unauthorized("missing or invalid access token")
    return str(user_id)


def _proxy_error(error: StagehubError) -> dict[str, Any]:
    """An API Gateway proxy answer with API.md's error body, for requests refused before routing."""
    return {
        "statusCode": error.status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(error.to_body()),
        "isBase64Encoded": False,
    }


def make_lambda_handler(app: APIGatewayRestResolver) -> LambdaHandler:
    """The Lambda entry point for `app`, with correlation ids, tracing and metrics."""

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        from shared.settings import get_settings  # on first use: settings are not a cold-import cost

        problem = body_problem(event)  # hostile bodies are refused before routing, with CORS like every answer
        answer = _proxy_error(problem) if problem is not None else app.resolve(event, context)
        return with_cors(event, answer, get_settings().cors_allow_origins)

    return lambda_handler
