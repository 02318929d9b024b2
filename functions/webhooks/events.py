"""Webhook events: their queue message, their Standard Webhooks signature, and their publication.

The out-queue path (results consumer, DLQ handler, cancel of a queued execution) calls
`publish_execution_change(updated_record, kind)` once per state change it applied. An execution without a
webhook, or without that kind among its `webhookEvents`, publishes nothing; progress goes out at most every
`webhook_progress_interval_s` per execution. Each event's `webhook-id` is derived from the execution and the
change (and a progress event's percent), so an event published twice reaches the receiver with one id, which
receivers dedupe on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import PoisonMessage, ServiceUnavailable
from shared.messages import utc_now_iso

if TYPE_CHECKING:
    from shared.models import ExecutionRecord

SECRET_PREFIX = "whsec_"  # noqa: S105  # the Standard Webhooks prefix of a secret, not one
_ID_NAMESPACE = uuid.UUID("0b9a6f0e-3c71-4b59-9d0b-5bd1b1f0c2a7")


class EventKind(StrEnum):
    """What `webhookEvents` subscribes to; `completed` is any final status."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"

    @property
    def type(self) -> str:
        return f"execution.{self.value}"


DEFAULT_EVENTS = (EventKind.COMPLETED,)


class WebhookMessage(BaseModel):
    """One event on the webhook queue, and the attempt it is at (1 for the first)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: Literal[1] = 1
    webhook_id: str = Field(alias="webhookId", min_length=1, max_length=100)
    execution_id: str = Field(alias="executionId", min_length=1)
    user_id: str = Field(alias="userId", min_length=1)
    url: str = Field(min_length=1)
    type: str
    timestamp: str
    data: dict[str, Any]
    attempt: int = Field(default=1, ge=1)
    # Unix seconds before which the attempt must not be made (a delay longer than SQS's 15 minutes).
    not_before: float | None = Field(default=None, alias="notBefore")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def body(self) -> bytes:
        """The request body: the same bytes on every attempt."""
        payload = {"type": self.type, "timestamp": self.timestamp, "data": self.data}
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def parse_webhook_message(body: str) -> WebhookMessage:
    try:
        return WebhookMessage.model_validate_json(body)
    except (ValidationError, ValueError) as exc:
        raise PoisonMessage(f"not a valid webhook message: {exc}") from exc


def webhook_id(execution_id: str, kind: EventKind, percent: int | None = None) -> str:
    """The event's id: one per execution and change, whoever publishes it and however often."""
    name = f"{execution_id}/{kind.value}" + (f"/{percent}" if kind is EventKind.PROGRESS else "")
    return "msg_" + uuid.uuid5(_ID_NAMESPACE, name).hex


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), key = the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def subscribed(record: ExecutionRecord, kind: EventKind) -> bool:
    if not record.webhook:
        return False
    events = [str(event) for event in record.webhook_events or []] or [e.value for e in DEFAULT_EVENTS]
    return kind.value in events


def event_message(record: ExecutionRecord, kind: EventKind) -> WebhookMessage:
    from functions.executions.schemas import execution_view

    data = execution_view(record)
    percent = (record.progress or {}).get("percent") if kind is EventKind.PROGRESS else None
    return WebhookMessage(
        webhookId=webhook_id(record.execution_id, kind, percent),
        executionId=record.execution_id,
        userId=record.user_id,
        url=record.webhook or "",
        type=kind.type,
        timestamp=utc_now_iso(),
        data=data,
    )


def publish_execution_change(record: ExecutionRecord | None, kind: EventKind) -> None:
    """Queue the webhook event of a change just applied to `record` (None: nothing was applied).

    A failure to queue is logged, not raised: the change is already written and must stand, and a retry of the
    caller's message would find the change applied and publish nothing either.
    """
    if record is None or not subscribed(record, kind):
        return
    from functions.observability import logger
    from functions.webhooks.dependencies import webhook_deps

    deps = webhook_deps()
    settings = deps.settings
    if not settings.webhook_queue_url:
        logger.warning("no webhook queue configured; event dropped", execution_id=record.execution_id)
        return
    try:
        if kind is EventKind.PROGRESS and not deps.store.claim_progress_slot(
            record.execution_id, time.time(), settings.webhook_progress_interval_s
        ):
            return
        deps.queues.send(settings.webhook_queue_url, event_message(record, kind).to_json())
    except ServiceUnavailable:
        logger.exception("a webhook event could not be queued", execution_id=record.execution_id, kind=kind)
