"""A submission's webhook subscription (`webhook`, `webhookEvents`): checked at submission, stored on the record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.webhooks import address
from functions.webhooks.events import DEFAULT_EVENTS, EventKind
from shared.errors import ValidationFailed

if TYPE_CHECKING:
    from functions.executions.schemas import SubmitExecution
    from shared.settings import Settings


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"body.{field}: {message}", details=[{"loc": ["body", field], "message": message, "type": "value_error"}]
    )


def check_subscription(body: SubmitExecution, settings: Settings) -> None:
    """422 unless the webhook is an https URL whose host resolves only to public addresses (see `address`)."""
    if body.webhook is None:
        if body.webhook_events is not None:
            raise _invalid("webhookEvents", "webhookEvents needs a webhook")
        return
    try:
        address.check_webhook(
            body.webhook, address.system_resolver, allow_loopback_http=settings.webhook_allow_loopback_http
        )
    except address.UnsafeWebhook as exc:
        raise _invalid("webhook", exc.message) from exc


def subscription_attributes(body: SubmitExecution | None) -> dict[str, Any]:
    """The record attributes of a checked subscription (none without a webhook)."""
    if body is None or body.webhook is None:
        return {}
    events = body.webhook_events or [kind.value for kind in DEFAULT_EVENTS]
    return {"webhook": body.webhook, "webhook_events": [k.value for k in EventKind if k.value in events]}
