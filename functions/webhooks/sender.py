"""Deliver one webhook event attempt, log it, and schedule what comes next.

Retries are new messages on the webhook queue sent with `DelaySeconds` (at most SQS's 900 s; a longer delay
rides in `notBefore`, and a message received before it is sent on again with the rest of the delay), so an
attempt counts deliveries, not receives, and the queue's own redrive to the DLQ is kept for a sender that
fails. After the last delay of `webhook_retry_delays_s` (at least 24 h in all) the event goes to the DLQ.
A `410 Gone` stops every later delivery of that execution.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from functions.webhooks.address import UnsafeWebhook, check_webhook
from functions.webhooks.delivery import Answer, post
from functions.webhooks.dependencies import WebhookDeps
from functions.webhooks.events import WebhookMessage, sign
from functions.webhooks.store import Delivery
from shared.messages import utc_now_iso

MAX_SQS_DELAY_S = 900
GONE = 410


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    GONE = "gone"  # this attempt got 410
    STOPPED = "stopped"  # an earlier one did: not attempted
    EXHAUSTED = "exhausted"  # no retries left: sent to the DLQ
    DEFERRED = "deferred"  # received before its time: sent on


def send_event(message: WebhookMessage, deps: WebhookDeps, now: Callable[[], float] = time.time) -> Outcome:
    current = now()
    if message.not_before is not None and message.not_before > current + 1:
        _send_later(message, message.not_before - current, deps)
        return Outcome.DEFERRED
    if deps.store.is_gone(message.execution_id):
        return Outcome.STOPPED
    answer = attempt(message, deps, int(current))
    deps.store.log_delivery(
        Delivery(
            execution_id=message.execution_id,
            webhook_id=message.webhook_id,
            type=message.type,
            attempt=message.attempt,
            status=answer.status,
            error=answer.error,
            at=utc_now_iso(),
        )
    )
    if answer.delivered:
        return Outcome.DELIVERED
    if answer.status == GONE:
        deps.store.mark_gone(message.execution_id)
        return Outcome.GONE
    delays = deps.settings.webhook_retry_delays_s
    if message.attempt > len(delays):
        deps.queues.send(deps.settings.webhook_dlq_url, message.to_json())
        return Outcome.EXHAUSTED
    delay = delays[message.attempt - 1]
    retry = message.model_copy(update={"attempt": message.attempt + 1, "not_before": current + delay})
    _send_later(retry, delay, deps)
    return Outcome.RETRYING


def attempt(message: WebhookMessage, deps: WebhookDeps, timestamp: int) -> Answer:
    """One signed POST; an address the guard refuses now (its DNS changed) is a failed attempt, not a call."""
    settings = deps.settings
    try:
        target, ip = check_webhook(message.url, deps.resolve, allow_loopback_http=settings.webhook_allow_loopback_http)
    except UnsafeWebhook as exc:
        return Answer(None, exc.message)
    body = message.body()
    headers = {
        "webhook-id": message.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, message.webhook_id, timestamp, body)
            for secret in deps.store.signing_secrets(message.user_id, timestamp)
        ),
    }
    return post(target, ip, headers, body, timeout_s=settings.webhook_timeout_s)


def _send_later(message: WebhookMessage, delay_s: float, deps: WebhookDeps) -> None:
    hop = max(0, min(MAX_SQS_DELAY_S, int(delay_s)))
    deps.queues.send_later(deps.settings.webhook_queue_url, message.to_json(), hop)
