"""PynamoDB records of the DynamoDB tables described in `shared.resources`.

Records are storage shapes, never API responses. Table names, region and endpoint are bound at run time
from settings by `bind_models`, so importing this module reads no environment. Every record (and any
transaction, through `dynamodb_connection()`) calls DynamoDB through the process's one client (`shared.aws`),
not a client of its own per model.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import Connection, TableConnection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection, Projection
from pynamodb.models import Model

from shared import aws
from shared import resources as res
from shared.settings import CommonSettings

_bound_settings: CommonSettings | None = None


def _on_shared_client(connection: Connection) -> Connection:
    """Give a pynamodb connection the process's DynamoDB client instead of one of its own (created on first use)."""
    if _bound_settings is None:
        raise RuntimeError("bind_models(settings) must run before DynamoDB is used")
    if connection._client is None:
        connection._client = aws.client("dynamodb", _bound_settings)
    return connection


def dynamodb_connection() -> Connection:
    """A pynamodb connection for transactions (`TransactWrite(connection=...)`) on the shared client."""
    settings = _bound_settings
    if settings is None:
        raise RuntimeError("bind_models(settings) must run before DynamoDB is used")
    return _on_shared_client(Connection(region=settings.region, host=settings.aws_endpoint_url))


class _Index(GlobalSecondaryIndex[Any]):
    """Base of our GSIs: names and projections from `shared.resources`."""


def _projection(spec: res.IndexSpec) -> Projection:
    if spec.projection == "KEYS_ONLY":
        return KeysOnlyProjection()
    if spec.projection == "INCLUDE":
        return IncludeProjection(list(spec.non_key_attributes))
    return AllProjection()


def _gsi(spec: res.IndexSpec, hash_attr: str, range_attr: str | None = None) -> type[_Index]:
    attrs: dict[str, Any] = {
        "Meta": type("Meta", (), {"index_name": spec.name, "projection": _projection(spec)}),
        hash_attr: UnicodeAttribute(hash_key=True, attr_name=spec.hash_key.name),
    }
    if range_attr and spec.range_key:
        attrs[range_attr] = UnicodeAttribute(range_key=True, attr_name=spec.range_key.name)
    return type(f"{spec.name.title().replace('-', '')}", (_Index,), attrs)


def _index(table: res.TableSpec, name: str) -> res.IndexSpec:
    return next(i for i in table.indexes if i.name == name)


class _Record(Model):
    class Meta:
        table_name = "unbound"
        region = "us-east-1"

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """pynamodb's table connection, its calls made through the shared client rather than one of its own."""
        table = super()._get_connection()
        _on_shared_client(table.connection)
        return table


class UserRecord(_Record):
    class Meta(_Record.Meta):
        spec = res.USERS

    email = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute(attr_name="userId")
    display_name = UnicodeAttribute(attr_name="displayName")
    password_hash = UnicodeAttribute(attr_name="passwordHash")
    created_at = UnicodeAttribute(attr_name="createdAt")

    by_user_id = _gsi(_index(res.USERS, "userId-index"), "user_id")()


class RefreshTokenRecord(_Record):
    """A refresh token, stored as the SHA-256 of the opaque string; tokens of one login share a family
    (`SessionRecord`), whose record alone says whether they are revoked."""

    class Meta(_Record.Meta):
        spec = res.REFRESH_TOKENS

    token_hash = UnicodeAttribute(hash_key=True, attr_name="tokenHash")
    family_id = UnicodeAttribute(attr_name="familyId")
    user_id = UnicodeAttribute(attr_name="userId")
    used = BooleanAttribute(default=False)
    created_at = UnicodeAttribute(attr_name="createdAt")
    expires_at = TTLAttribute(attr_name="expiresAt")


class SessionRecord(_Record):
    """A refresh-token family: one per login. Logout and reuse detection revoke it with one write; it ends at
    `expires_at` (its login plus the session lifetime) whatever the rotations."""

    class Meta(_Record.Meta):
        spec = res.SESSIONS

    family_id = UnicodeAttribute(hash_key=True, attr_name="familyId")
    user_id = UnicodeAttribute(attr_name="userId")
    revoked = BooleanAttribute(default=False)
    created_at = UnicodeAttribute(attr_name="createdAt")
    expires_at = TTLAttribute(attr_name="expiresAt")


class ThrottleRecord(_Record):
    """A counter of attempts within a window that ends at `expires_at` (checked on every use: TTL is lazy)."""

    class Meta(_Record.Meta):
        spec = res.THROTTLES

    throttle_key = UnicodeAttribute(hash_key=True, attr_name="throttleKey")
    attempts = NumberAttribute(default=0)
    expires_at = TTLAttribute(attr_name="expiresAt")


class PipelineRecord(_Record):
    """A pipeline's metadata; its definition (stages) is JSON in S3 at `definition_key`.

    Written once: its rating totals live in the ratings table (`RatingTotalsRecord`), so a rating never rewrites
    this item or its index entries. `list_partition` is one of `res.PIPELINE_LIST_SHARDS` shards of the list.
    """

    class Meta(_Record.Meta):
        spec = res.PIPELINES

    pipeline_id = UnicodeAttribute(hash_key=True, attr_name="pipelineId")
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    author = UnicodeAttribute()
    author_name = UnicodeAttribute(attr_name="authorName")
    created_at = UnicodeAttribute(attr_name="createdAt")
    sort_key = UnicodeAttribute(attr_name="sortKey")
    list_partition = UnicodeAttribute(attr_name="listPartition", null=True)  # None: not in the list of all
    stage_count = NumberAttribute(attr_name="stageCount")
    definition_key = UnicodeAttribute(attr_name="definitionKey")

    by_author = _gsi(_index(res.PIPELINES, "author-index"), "author", "sort_key")()
    all_pipelines = _gsi(_index(res.PIPELINES, "all-index"), "list_partition", "sort_key")()


class RatingRecord(_Record):
    class Meta(_Record.Meta):
        spec = res.RATINGS

    pipeline_id = UnicodeAttribute(hash_key=True, attr_name="pipelineId")
    user_id = UnicodeAttribute(range_key=True, attr_name="userId")
    score = NumberAttribute()
    updated_at = UnicodeAttribute(attr_name="updatedAt")


class RatingTotalsRecord(_Record):
    """A pipeline's rating totals: the item `(pipelineId, userId=RATING_TOTALS_USER)` of the ratings table."""

    class Meta(_Record.Meta):
        spec = res.RATINGS

    pipeline_id = UnicodeAttribute(hash_key=True, attr_name="pipelineId")
    user_id = UnicodeAttribute(range_key=True, attr_name="userId", default=res.RATING_TOTALS_USER)
    rating_sum = NumberAttribute(attr_name="ratingSum", default=0)
    rating_count = NumberAttribute(attr_name="ratingCount", default=0)


class ExecutionRecord(_Record):
    """An execution's state. `progress` and `error` are stored as JSON in API.md's shapes."""

    class Meta(_Record.Meta):
        spec = res.EXECUTIONS

    execution_id = UnicodeAttribute(hash_key=True, attr_name="executionId")
    pipeline_id = UnicodeAttribute(attr_name="pipelineId")
    user_id = UnicodeAttribute(attr_name="userId")
    backend = UnicodeAttribute()
    status = UnicodeAttribute()
    progress = JSONAttribute(null=True)
    progress_percent = NumberAttribute(attr_name="progressPercent", default=0)  # for "never backwards" conditions
    error = JSONAttribute(null=True)
    created_at = UnicodeAttribute(attr_name="createdAt")
    started_at = UnicodeAttribute(attr_name="startedAt", null=True)
    finished_at = UnicodeAttribute(attr_name="finishedAt", null=True)
    cancel_requested = BooleanAttribute(attr_name="cancelRequested", default=False)
    request_uri = UnicodeAttribute(attr_name="requestUri")
    result_uri = UnicodeAttribute(attr_name="resultUri", null=True)
    sort_key = UnicodeAttribute(attr_name="sortKey")
    user_status = UnicodeAttribute(attr_name="userStatus")
    pipeline_user = UnicodeAttribute(attr_name="pipelineUser")
    expires_at = TTLAttribute(attr_name="expiresAt", null=True)
    # Webhooks: where this execution's events go, and which of them (API.md, "Events: wait, webhooks, backends").
    webhook = UnicodeAttribute(null=True)
    webhook_events = ListAttribute(of=UnicodeAttribute, attr_name="webhookEvents", null=True)
    # Fair share (functions/executions/admission.py): set while waiting for admission, then admittedAt.
    waiting_shard = UnicodeAttribute(attr_name="waitingShard", null=True)
    admitted_at = UnicodeAttribute(attr_name="admittedAt", null=True)
    # DELETE's tombstone (set before the results are purged; the worker and the consumer honour it).
    deleted_at = UnicodeAttribute(attr_name="deletedAt", null=True)
    usage = JSONAttribute(null=True)  # API.md's usage, from the worker's finished event

    by_user = _gsi(_index(res.EXECUTIONS, "user-index"), "user_id", "sort_key")()
    by_user_status = _gsi(_index(res.EXECUTIONS, "user-status-index"), "user_status", "sort_key")()
    by_pipeline_user = _gsi(_index(res.EXECUTIONS, "pipeline-user-index"), "pipeline_user", "sort_key")()
    waiting = _gsi(_index(res.EXECUTIONS, "waiting-index"), "waiting_shard", "sort_key")()


class IdempotencyRecord(_Record):
    """`<userId>#<Idempotency-Key>` -> the execution it created; expires after 24 h."""

    class Meta(_Record.Meta):
        spec = res.IDEMPOTENCY

    idempotency_key = UnicodeAttribute(hash_key=True, attr_name="idempotencyKey")
    execution_id = UnicodeAttribute(attr_name="executionId")
    expires_at = TTLAttribute(attr_name="expiresAt")
    request_hash = UnicodeAttribute(attr_name="requestHash", null=True)  # SHA-256 of pipeline and body


class AdmissionRecord(_Record):
    """A user's admission state and today's usage (see functions/executions/admission.py)."""

    class Meta(_Record.Meta):
        spec = res.ADMISSION

    user_id = UnicodeAttribute(hash_key=True, attr_name="userId")
    active_ids = UnicodeSetAttribute(attr_name="activeIds", null=True)  # admitted, not yet ended
    waiting = NumberAttribute(default=0)  # executions waiting for admission
    usage_day = UnicodeAttribute(attr_name="usageDay", null=True)  # "2026-12-01" (UTC)
    day_executions = NumberAttribute(attr_name="dayExecutions", default=0)
    day_gpu_seconds = NumberAttribute(attr_name="dayGpuSeconds", default=0)
    expires_at = TTLAttribute(attr_name="expiresAt", null=True)


RECORDS: tuple[type[_Record], ...] = (
    UserRecord,
    RefreshTokenRecord,
    PipelineRecord,
    RatingRecord,
    ExecutionRecord,
    IdempotencyRecord,
    RatingTotalsRecord,
    AdmissionRecord,
)
RECORDS += (SessionRecord, ThrottleRecord)


def bind_models(settings: CommonSettings) -> None:
    """Point every record class at its table for these settings (name, region, endpoint, the shared client)."""
    global _bound_settings
    _bound_settings = settings
    for record in RECORDS:
        spec: res.TableSpec = record.Meta.spec  # type: ignore[attr-defined]
        record.Meta.table_name = getattr(settings, spec.env_var.lower())
        record.Meta.region = settings.region
        record.Meta.host = settings.aws_endpoint_url  # type: ignore[attr-defined]
        record._connection = None  # the next call builds its table connection for the new table


# --- webhooks: one table (shared.resources.WEBHOOKS), three kinds of item told apart by their keys ---


class WebhookSecretRecord(_Record):
    """A user's webhook signing secret (`whsec_<base64>`): pk "user#<userId>", sk "secret"."""

    class Meta(_Record.Meta):
        spec = res.WEBHOOKS

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    secret = UnicodeAttribute()
    created_at = UnicodeAttribute(attr_name="createdAt")
    # The secret a rotation replaced, and when (Unix seconds): deliveries carry its signature too for a while.
    previous_secret = UnicodeAttribute(attr_name="previousSecret", null=True)
    rotated_at = NumberAttribute(attr_name="rotatedAt", null=True)


class WebhookStateRecord(_Record):
    """An execution's delivery state: pk "execution#<id>", sk "state" (progress throttle, stopped by a 410)."""

    class Meta(_Record.Meta):
        spec = res.WEBHOOKS

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    last_progress_at = NumberAttribute(attr_name="lastProgressAt", null=True)  # Unix seconds
    gone_at = UnicodeAttribute(attr_name="goneAt", null=True)
    expires_at = TTLAttribute(attr_name="expiresAt", null=True)


class WebhookDeliveryRecord(_Record):
    """One delivery attempt: pk "execution#<id>", sk "delivery#<at>#<webhookId>#<attempt>" (newest first)."""

    class Meta(_Record.Meta):
        spec = res.WEBHOOKS

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    webhook_id = UnicodeAttribute(attr_name="webhookId")
    type = UnicodeAttribute()
    attempt = NumberAttribute()
    status = NumberAttribute(null=True)  # the receiver's HTTP status; null when none came
    error = UnicodeAttribute(null=True)
    at = UnicodeAttribute()
    expires_at = TTLAttribute(attr_name="expiresAt", null=True)


RECORDS = (*RECORDS, WebhookSecretRecord, WebhookStateRecord, WebhookDeliveryRecord)
