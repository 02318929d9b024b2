"""Routes of the webhooks API (API.md, "Events: wait, webhooks, backends"): the caller's signing secret and
the delivery log of an execution. The domain module is imported when a route first runs (cold starts)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from functions.http import caller_id
from functions.openapi import responses
from functions.pagination import Cursor, Limit, decode_cursor, encode_cursor
from functions.webhooks.dependencies import webhook_deps
from functions.webhooks.schemas import WebhookDeliveryPage, WebhookSecret

router = APIGatewayRouter()


def _json(status: int, body: Any) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _secret(secret: str) -> Response[Any]:
    """A secret must not stay in any cache on the way (as token answers)."""
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body={"secret": secret},
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/users/me/webhook-secret",
    summary="The caller's webhook signing secret (created on first use)",
    responses=responses(200, "The secret", 503),
)
def get_secret() -> Response[WebhookSecret]:
    from functions.webhooks import logic

    return _secret(logic.webhook_secret(caller_id(router), webhook_deps()))


@router.post(
    "/users/me/webhook-secret",
    summary="Rotate the caller's webhook signing secret",
    responses=responses(200, "The new secret", 503),
)
def rotate_secret() -> Response[WebhookSecret]:
    from functions.webhooks import logic

    return _secret(logic.rotate_webhook_secret(caller_id(router), webhook_deps()))


@router.get(
    "/executions/<executionId>/webhook-deliveries",
    summary="The attempts to deliver an execution's webhook events, newest first",
    responses=responses(200, "A page of delivery attempts", 400, 404),
)
def deliveries(executionId: str, limit: Limit = 20, cursor: Cursor = None) -> WebhookDeliveryPage:  # noqa: N803
    from functions.webhooks import logic

    page = logic.webhook_deliveries(
        executionId, caller_id(router), webhook_deps(), limit=limit, start=decode_cursor(cursor)
    )
    return {  # type: ignore[return-value]
        "items": [logic.delivery_view(r) for r in page.records],
        "nextCursor": encode_cursor(page.last_key),
    }
