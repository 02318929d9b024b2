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
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import Connection, TableConnection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
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
    """Base of our GSIs: all attributes projected, names from `shared.resources`."""


def _gsi(spec: res.IndexSpec, hash_attr: str, range_attr: str | None = None) -> type[_Index]:
    attrs: dict[str, Any] = {
        "Meta": type("Meta", (), {"index_name": spec.name, "projection": AllProjection()}),
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
    """A refresh token, stored as the SHA-256 of the opaque string; tokens of one login share a family."""

    class Meta(_Record.Meta):
        spec = res.REFRESH_TOKENS

    token_hash = UnicodeAttribute(hash_key=True, attr_name="tokenHash")
    family_id = UnicodeAttribute(attr_name="familyId")
    user_id = UnicodeAttribute(attr_name="userId")
    used = BooleanAttribute(default=False)
    revoked = BooleanAttribute(default=False)
    created_at = UnicodeAttribute(attr_name="createdAt")
    expires_at = TTLAttribute(attr_name="expiresAt")

    by_family = _gsi(_index(res.REFRESH_TOKENS, "familyId-index"), "family_id")()


class PipelineRecord(_Record):
    """A pipeline's metadata and rating aggregates; its definition (stages) is JSON in S3 at `definition_key`."""

    class Meta(_Record.Meta):
        spec = res.PIPELINES

    pipeline_id = UnicodeAttribute(hash_key=True, attr_name="pipelineId")
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    author = UnicodeAttribute()
    author_name = UnicodeAttribute(attr_name="authorName")
    created_at = UnicodeAttribute(attr_name="createdAt")
    sort_key = UnicodeAttribute(attr_name="sortKey")
    list_partition = UnicodeAttribute(attr_name="listPartition", default="ALL")
    stage_count = NumberAttribute(attr_name="stageCount")
    definition_key = UnicodeAttribute(attr_name="definitionKey")
    rating_sum = NumberAttribute(attr_name="ratingSum", default=0)
    rating_count = NumberAttribute(attr_name="ratingCount", default=0)

    by_author = _gsi(_index(res.PIPELINES, "author-index"), "author", "sort_key")()
    all_pipelines = _gsi(_index(res.PIPELINES, "all-index"), "list_partition", "sort_key")()


class RatingRecord(_Record):
    class Meta(_Record.Meta):
        spec = res.RATINGS

    pipeline_id = UnicodeAttribute(hash_key=True, attr_name="pipelineId")
    user_id = UnicodeAttribute(range_key=True, attr_name="userId")
    score = NumberAttribute()
    updated_at = UnicodeAttribute(attr_name="updatedAt")


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

    by_user = _gsi(_index(res.EXECUTIONS, "user-index"), "user_id", "sort_key")()
    by_user_status = _gsi(_index(res.EXECUTIONS, "user-status-index"), "user_status", "sort_key")()
    by_pipeline_user = _gsi(_index(res.EXECUTIONS, "pipeline-user-index"), "pipeline_user", "sort_key")()


class IdempotencyRecord(_Record):
    """`<userId>#<Idempotency-Key>` -> the execution it created; expires after 24 h."""

    class Meta(_Record.Meta):
        spec = res.IDEMPOTENCY

    idempotency_key = UnicodeAttribute(hash_key=True, attr_name="idempotencyKey")
    execution_id = UnicodeAttribute(attr_name="executionId")
    expires_at = TTLAttribute(attr_name="expiresAt")


RECORDS: tuple[type[_Record], ...] = (
    UserRecord,
    RefreshTokenRecord,
    PipelineRecord,
    RatingRecord,
    ExecutionRecord,
    IdempotencyRecord,
)


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
