"""Data access for pipelines and ratings: the only module of the domain that talks to DynamoDB.

Every DynamoDB failure is translated here: a failed condition is part of each method's answer (None, False or a
typed outcome), anything else is `StoreUnavailable` (503). Shaped like `functions.executions.store.ExecutionStore`.

The list of all pipelines is sharded: each pipeline sits in one of `PIPELINE_LIST_SHARDS` index partitions
(`ALL#<n>`), so creations spread over that many partitions; a page queries every shard for the items before the
cursor (in parallel) and merges them newest first. Rating totals live in the ratings table, so a rating never writes the
pipelines table or its indexes.
"""

from __future__ import annotations

import heapq
import zlib
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from functools import lru_cache
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from functions.dynamodb import CONDITION_FAILED, StoreUnavailable
from functions.dynamodb import dynamodb_errors as _dynamodb
from functions.pagination import Page, query_page
from shared import resources as res
from shared.models import PipelineRecord, RatingRecord, RatingTotalsRecord, UserRecord
from shared.settings import Settings

_LIST_PREFIX = "ALL#"


def list_partition(pipeline_id: str) -> str:
    """The shard of the all-pipelines index a pipeline is listed in (stable: derived from its id)."""
    return f"{_LIST_PREFIX}{zlib.crc32(pipeline_id.encode()) % res.PIPELINE_LIST_SHARDS}"


class PipelineStore:
    """Pipeline records (pynamodb, bound to their table by `shared.models.bind_models`)."""

    def get(self, pipeline_id: str) -> PipelineRecord | None:
        with _dynamodb(f"pipeline {pipeline_id}"):
            try:
                return PipelineRecord.get(pipeline_id, consistent_read=True)
            except PipelineRecord.DoesNotExist:
                return None

    def create(self, record: PipelineRecord) -> None:
        with _dynamodb(f"pipeline {record.pipeline_id}"):
            record.save(condition=PipelineRecord.pipeline_id.does_not_exist())

    def delete(self, pipeline_id: str) -> bool:
        """Delete the record; False when it was already gone (a concurrent delete)."""
        try:
            PipelineRecord(pipeline_id).delete(condition=PipelineRecord.pipeline_id.exists())
        except PynamoDBException as exc:
            if exc.cause_response_code == CONDITION_FAILED:
                return False
            raise StoreUnavailable(f"database error on pipeline {pipeline_id}") from exc
        return True

    def page_by_author(self, author: str, limit: int, start: dict[str, Any] | None) -> Page[PipelineRecord]:
        with _dynamodb("pipeline list"):
            return query_page(PipelineRecord.by_author, author, ("pipelineId", "author", "sortKey"), limit, start)

    def page_all(self, limit: int, before: str | None) -> tuple[list[PipelineRecord], bool]:
        """The newest `limit` pipelines with a sort key below `before` (all when None), and whether more follow.

        The shards are queried in parallel (each for at most `limit + 1` entries), so a page costs one round trip.
        """

        def shard_page(shard: int) -> list[PipelineRecord]:
            condition = PipelineRecord.sort_key < before if before is not None else None
            query = PipelineRecord.all_pipelines.query(
                f"{_LIST_PREFIX}{shard}",
                range_key_condition=condition,
                scan_index_forward=False,
                limit=limit + 1,
                page_size=limit + 1,
            )
            return list(query)

        with _dynamodb("pipeline list"), ThreadPoolExecutor(max_workers=res.PIPELINE_LIST_SHARDS) as pool:
            pages = list(pool.map(shard_page, range(res.PIPELINE_LIST_SHARDS)))
        merged = heapq.nlargest(limit + 1, (record for page in pages for record in page), key=lambda r: r.sort_key)
        return merged[:limit], len(merged) > limit

    def display_name(self, user_id: str) -> str:
        """The author's display name, copied onto the pipeline at creation ("" for an unknown user)."""
        with _dynamodb(f"user {user_id}"):
            for user in UserRecord.by_user_id.query(user_id, limit=1):
                return str(user.display_name)
        return ""


class RatingOutcome(Enum):
    APPLIED = "applied"
    PIPELINE_GONE = "pipeline gone"  # the pipeline was deleted: nothing was written
    CHANGED = "changed"  # the rating changed since it was read, or the write conflicted with another: read again


@lru_cache(maxsize=4)
def _connection(region: str, host: str | None) -> Connection:
    return Connection(region=region, host=host)


class RatingStore:
    """Ratings and per-pipeline totals in the ratings table."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def score(self, pipeline_id: str, user_id: str) -> int | None:
        with _dynamodb(f"rating of {pipeline_id}"):
            try:
                return int(RatingRecord.get(pipeline_id, user_id, consistent_read=True).score)
            except RatingRecord.DoesNotExist:
                return None

    def scores(self, pipeline_ids: list[str], user_id: str) -> dict[str, int]:
        """The user's scores of these pipelines (those rated)."""
        if not pipeline_ids:
            return {}
        with _dynamodb("ratings"):
            return {r.pipeline_id: int(r.score) for r in RatingRecord.batch_get([(p, user_id) for p in pipeline_ids])}

    def totals(self, pipeline_ids: list[str], consistent: bool = False) -> dict[str, tuple[int, int]]:
        """(sum, count) of the ratings of these pipelines (those rated at least once)."""
        if not pipeline_ids:
            return {}
        keys = [(p, res.RATING_TOTALS_USER) for p in pipeline_ids]
        with _dynamodb("rating totals"):
            return {
                t.pipeline_id: (int(t.rating_sum), int(t.rating_count))
                for t in RatingTotalsRecord.batch_get(keys, consistent_read=consistent)
            }

    def rate(self, pipeline_id: str, user_id: str, score: int, previous: int | None, at: str) -> RatingOutcome:
        """One transaction: the pipeline still exists, the rating is still `previous`, the totals move with it."""
        rating = RatingRecord(pipeline_id=pipeline_id, user_id=user_id, score=score, updated_at=at)
        totals = RatingTotalsRecord(pipeline_id=pipeline_id)
        rating_unchanged: Condition
        actions: list[Action]
        if previous is None:
            rating_unchanged = RatingRecord.user_id.does_not_exist()
            actions = [RatingTotalsRecord.rating_sum.add(score), RatingTotalsRecord.rating_count.add(1)]
        else:
            rating_unchanged = RatingRecord.score == previous
            actions = [RatingTotalsRecord.rating_sum.add(score - previous)]
        settings = self._settings
        try:
            with TransactWrite(connection=_connection(settings.region, settings.aws_endpoint_url)) as transaction:
                transaction.condition_check(PipelineRecord, pipeline_id, condition=PipelineRecord.pipeline_id.exists())
                transaction.save(rating, condition=rating_unchanged)
                transaction.update(totals, actions=actions)
        except TransactWriteError as exc:
            return _rating_failure(exc)
        except PynamoDBException as exc:
            raise StoreUnavailable(f"database error rating {pipeline_id}") from exc
        return RatingOutcome.APPLIED

    def delete_all(self, pipeline_id: str) -> None:
        """Every rating of a pipeline and its totals."""
        with _dynamodb(f"ratings of {pipeline_id}"), RatingRecord.batch_write() as batch:
            for rating in RatingRecord.query(pipeline_id, consistent_read=True):
                batch.delete(rating)


def _rating_failure(exc: TransactWriteError) -> RatingOutcome:
    reasons = exc.cancellation_reasons or []
    codes = [reason.code if reason is not None else None for reason in reasons]
    if codes[:1] == ["ConditionalCheckFailed"]:
        return RatingOutcome.PIPELINE_GONE
    if exc.cause_response_code == "TransactionConflictException" or any(
        code in {"ConditionalCheckFailed", "TransactionConflict"} for code in codes
    ):
        return RatingOutcome.CHANGED
    raise StoreUnavailable("database error storing a rating") from exc
