"""Data access of the webhooks table: users' secrets, each execution's delivery state and its delivery log.

Botocore/pynamodb failures become the transient `StoreUnavailable` here; conditions that do not hold come back
as plain results (an existing secret, a progress slot already taken).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import PynamoDBException

from functions.dynamodb import CONDITION_FAILED, StoreUnavailable
from functions.dynamodb import dynamodb_errors as _dynamodb
from functions.pagination import Page, check_cursor
from functions.webhooks.events import SECRET_PREFIX
from shared.messages import utc_now_iso
from shared.models import WebhookDeliveryRecord, WebhookSecretRecord, WebhookStateRecord

SECRET_BYTES = 32
SECRET_SORT_KEY = "secret"  # noqa: S105  # a sort key, not a secret
STATE_SORT_KEY = "state"
DELIVERY_PREFIX = "delivery#"
# The delivery log and the state outlive the execution's results (30 days) by a little, then expire.
LOG_TTL = timedelta(days=31)
ROTATION_GRACE_S = 24 * 3600


def user_key(user_id: str) -> str:
    return f"user#{user_id}"


def execution_key(execution_id: str) -> str:
    return f"execution#{execution_id}"


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _condition_failed(exc: PynamoDBException) -> bool:
    return exc.cause_response_code == CONDITION_FAILED


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one event, as the log keeps it."""

    execution_id: str
    webhook_id: str
    type: str
    attempt: int
    status: int | None
    error: str | None
    at: str


class WebhookStore:
    """The webhooks table through its pynamodb records (bound by `shared.models.bind_models`)."""

    # --- secrets ---

    def secret(self, user_id: str) -> str:
        """The user's secret, created on first use (a race of two first uses keeps one of them)."""
        return self._secret_record(user_id).secret

    def signing_secrets(self, user_id: str, now: float) -> list[str]:
        """The secrets a delivery is signed with: the current one, and for `ROTATION_GRACE_S` after a rotation
        the one it replaced (Standard Webhooks allows several signatures), so receivers can switch at leisure."""
        record = self._secret_record(user_id)
        recent = record.rotated_at is not None and now - float(record.rotated_at) < ROTATION_GRACE_S
        return [record.secret, record.previous_secret] if recent and record.previous_secret else [record.secret]

    def _secret_record(self, user_id: str) -> WebhookSecretRecord:
        with _dynamodb(f"webhook secret of {user_id}"):
            try:
                return WebhookSecretRecord.get(user_key(user_id), SECRET_SORT_KEY, consistent_read=True)
            except WebhookSecretRecord.DoesNotExist:
                pass
        record = WebhookSecretRecord(user_key(user_id), SECRET_SORT_KEY, secret=new_secret(), created_at=utc_now_iso())
        try:
            record.save(condition=WebhookSecretRecord.pk.does_not_exist())
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise StoreUnavailable(f"database error on webhook secret of {user_id}") from exc
            return self._secret_record(user_id)  # another request created it first
        return record

    def rotate_secret(self, user_id: str) -> str:
        """A new secret replaces the user's; the replaced one still signs deliveries for `ROTATION_GRACE_S`."""
        current = self._secret_record(user_id)
        record = WebhookSecretRecord(
            user_key(user_id),
            SECRET_SORT_KEY,
            secret=new_secret(),
            created_at=utc_now_iso(),
            previous_secret=current.secret,
            rotated_at=time.time(),
        )
        with _dynamodb(f"webhook secret of {user_id}"):
            record.save()
        return record.secret

    # --- per-execution state ---

    def claim_progress_slot(self, execution_id: str, now: float, interval_s: float) -> bool:
        """True when no progress event of this execution went out in the last `interval_s` (and claim now)."""
        record = WebhookStateRecord(execution_key(execution_id), STATE_SORT_KEY)
        condition = WebhookStateRecord.last_progress_at.does_not_exist() | (
            WebhookStateRecord.last_progress_at <= now - interval_s
        )
        actions: list[Any] = [
            WebhookStateRecord.last_progress_at.set(now),
            WebhookStateRecord.expires_at.set(datetime.now(UTC) + LOG_TTL),
        ]
        try:
            record.update(actions=actions, condition=condition)
        except PynamoDBException as exc:
            if _condition_failed(exc):
                return False
            raise StoreUnavailable(f"database error on webhook state of {execution_id}") from exc
        return True

    def mark_gone(self, execution_id: str) -> None:
        """The receiver answered 410: no more deliveries for this execution."""
        record = WebhookStateRecord(execution_key(execution_id), STATE_SORT_KEY)
        actions: list[Any] = [
            WebhookStateRecord.gone_at.set(utc_now_iso()),
            WebhookStateRecord.expires_at.set(datetime.now(UTC) + LOG_TTL),
        ]
        with _dynamodb(f"webhook state of {execution_id}"):
            record.update(actions=actions)

    def is_gone(self, execution_id: str) -> bool:
        with _dynamodb(f"webhook state of {execution_id}"):
            try:
                state = WebhookStateRecord.get(execution_key(execution_id), STATE_SORT_KEY, consistent_read=True)
            except WebhookStateRecord.DoesNotExist:
                return False
        return state.gone_at is not None

    # --- the delivery log ---

    def log_delivery(self, delivery: Delivery) -> None:
        sort_key = f"{DELIVERY_PREFIX}{delivery.at}#{delivery.webhook_id}#{delivery.attempt:04d}"
        record = WebhookDeliveryRecord(
            execution_key(delivery.execution_id),
            sort_key,
            webhook_id=delivery.webhook_id,
            type=delivery.type,
            attempt=delivery.attempt,
            status=delivery.status,
            error=delivery.error,
            at=delivery.at,
            expires_at=datetime.now(UTC) + LOG_TTL,
        )
        with _dynamodb(f"webhook delivery log of {delivery.execution_id}"):
            record.save()

    def deliveries(self, execution_id: str, limit: int, start: dict[str, Any] | None) -> Page[WebhookDeliveryRecord]:
        """A page of the execution's delivery attempts, newest first."""
        partition = execution_key(execution_id)
        check_cursor(start, {"pk", "sk"}, "pk", partition)
        with _dynamodb(f"webhook delivery log of {execution_id}"):
            records = list(
                WebhookDeliveryRecord.query(
                    partition,
                    WebhookDeliveryRecord.sk.startswith(DELIVERY_PREFIX),
                    scan_index_forward=False,
                    limit=limit + 1,
                    page_size=limit + 1,
                    last_evaluated_key=start,
                )
            )
        if len(records) <= limit:
            return Page(records, None)
        serialized = records[limit - 1].serialize()
        return Page(records[:limit], {name: serialized[name] for name in ("pk", "sk")})
