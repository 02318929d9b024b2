"""The webhooks API's domain: the caller's secret (created on first use, rotated on request) and the delivery
log of the caller's own executions."""

from __future__ import annotations

from typing import Any

from functions.pagination import Page
from functions.webhooks.dependencies import WebhookDeps
from shared.errors import NotFound
from shared.models import WebhookDeliveryRecord


def webhook_secret(user_id: str, deps: WebhookDeps) -> str:
    return deps.store.secret(user_id)


def rotate_webhook_secret(user_id: str, deps: WebhookDeps) -> str:
    return deps.store.rotate_secret(user_id)


def webhook_deliveries(
    execution_id: str, user_id: str, deps: WebhookDeps, *, limit: int, start: dict[str, Any] | None
) -> Page[WebhookDeliveryRecord]:
    """The attempts to deliver an execution's events, newest first; NotFound unless it is the caller's."""
    record = deps.executions.get(execution_id) if _looks_like_id(execution_id) else None
    if record is None or record.user_id != user_id:
        raise NotFound("no such execution")  # the same answer for unknown ids and other users' executions
    return deps.store.deliveries(execution_id, limit, start)


def delivery_view(record: WebhookDeliveryRecord) -> dict[str, Any]:
    return {
        "webhookId": record.webhook_id,
        "type": record.type,
        "attempt": int(record.attempt),
        "status": None if record.status is None else int(record.status),
        "error": record.error,
        "at": record.at,
    }


def _looks_like_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)
