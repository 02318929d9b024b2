"""The pipeline and rating stores on the moto stack: the sharded list, ratings that never write the pipelines table,
and DynamoDB failures answered as 503 with API.md's body."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from pynamodb.exceptions import GetError, QueryError

from functions.pipelines.store import PipelineStore, RatingOutcome, RatingStore, StoreUnavailable, list_partition
from shared import resources as res
from shared.aws import client
from shared.models import PipelineRecord, RatingRecord
from shared.settings import Settings
from tests.integration.executions_support import api_event, lambda_context, new_id

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser

Users = Callable[..., "TestUser"]


def _record(created_at: str) -> PipelineRecord:
    pipeline_id = str(uuid.uuid4())
    return PipelineRecord(
        pipeline_id=pipeline_id,
        name="p",
        author=str(uuid.uuid4()),
        author_name="",
        created_at=created_at,
        sort_key=f"{created_at}#{pipeline_id}",
        list_partition=list_partition(pipeline_id),
        stage_count=1,
        definition_key=f"pipelines/{pipeline_id}.json",
    )


def test_the_sharded_list_pages_newest_first_across_shards(stack_env: Settings) -> None:
    store = PipelineStore()
    # In 1999, so that a page starting before 2000 holds only these (two share a timestamp), and the lists other
    # tests read, newest first, never see them.
    stamps = [f"1999-01-01T00:00:{second:02d}.000Z" for second in range(25)] + ["1999-01-01T00:00:24.000Z"]
    records = [_record(stamp) for stamp in stamps]
    for record in records:
        store.create(record)
    assert len({r.list_partition for r in records}) > 1
    expected = [r.pipeline_id for r in sorted(records, key=lambda r: r.sort_key, reverse=True)]
    seen: list[str] = []
    before = "2000-01-01T00:00:00.000Z"
    while len(seen) < len(expected):
        page, more = store.page_all(7, before)
        seen += [r.pipeline_id for r in page]
        assert more or len(seen) >= len(expected)
        before = page[-1].sort_key
    assert seen[: len(expected)] == expected


def test_a_rating_writes_the_ratings_table_only(stack_env: Settings) -> None:
    store, ratings = PipelineStore(), RatingStore(stack_env)
    record = _record("2026-01-01T00:00:00.000Z")
    store.create(record)
    dynamodb = client("dynamodb", stack_env)
    key = {"pipelineId": {"S": record.pipeline_id}}
    before = dynamodb.get_item(TableName=stack_env.pipelines_table, Key=key)["Item"]
    assert ratings.rate(record.pipeline_id, "u1", 4, None, "t") is RatingOutcome.APPLIED
    assert ratings.rate(record.pipeline_id, "u1", 2, None, "t") is RatingOutcome.CHANGED  # it is 4 now, not unrated
    assert ratings.rate(record.pipeline_id, "u1", 2, 4, "t") is RatingOutcome.APPLIED
    assert dynamodb.get_item(TableName=stack_env.pipelines_table, Key=key)["Item"] == before
    assert ratings.totals([record.pipeline_id], consistent=True) == {record.pipeline_id: (2, 1)}
    totals_key = key | {"userId": {"S": res.RATING_TOTALS_USER}}
    assert "Item" in dynamodb.get_item(TableName=stack_env.ratings_table, Key=totals_key)

    assert store.delete(record.pipeline_id)
    assert ratings.rate(record.pipeline_id, "u2", 5, None, "t") is RatingOutcome.PIPELINE_GONE
    ratings.delete_all(record.pipeline_id)
    assert list(RatingRecord.query(record.pipeline_id, consistent_read=True)) == []
    assert not store.delete(record.pipeline_id)


def _failing(error: type[Exception]) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error("throttled")

    return fail


def _call_pipelines(method: str, path: str, resource: str, path_parameters: dict[str, str] | None = None) -> Any:
    """The pipelines function in this process (the local gateway's instances are other processes, which a
    monkeypatch here does not reach)."""
    from functions.pipelines.handler import lambda_handler

    event = api_event(method, path, new_id(), resource=resource, path_parameters=path_parameters)
    response = lambda_handler(event, lambda_context("pipelines"))  # type: ignore[arg-type]
    return response["statusCode"], json.loads(response["body"])["code"]


def test_dynamodb_failures_are_503_with_the_error_body(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PipelineRecord, "get", _failing(GetError))
    with pytest.raises(StoreUnavailable):
        PipelineStore().get(str(uuid.uuid4()))
    pipeline_id = str(uuid.uuid4())
    answer = _call_pipelines("GET", f"/pipelines/{pipeline_id}", "/pipelines/{pipelineId}", {"pipelineId": pipeline_id})
    assert answer == (503, "SERVICE_UNAVAILABLE")
    monkeypatch.setattr(PipelineRecord.all_pipelines, "query", _failing(QueryError))
    assert _call_pipelines("GET", "/pipelines", "/pipelines") == (503, "SERVICE_UNAVAILABLE")


def test_the_migration_moves_legacy_pipelines_and_their_totals_once(stack_env: Settings) -> None:
    from functions.pipelines.migrate import migrate

    dynamodb = client("dynamodb", stack_env)
    record = _record("2026-01-02T00:00:00.000Z")
    legacy = record.serialize() | {
        "listPartition": {"S": "ALL"},
        "ratingSum": {"N": "9"},
        "ratingCount": {"N": "2"},
    }
    dynamodb.put_item(TableName=stack_env.pipelines_table, Item=legacy)
    ratings = RatingStore(stack_env)
    assert ratings.rate(record.pipeline_id, "new-rater", 5, None, "t") is RatingOutcome.APPLIED  # before migrating

    assert migrate(dynamodb, stack_env.pipelines_table, stack_env.ratings_table) == 1
    assert migrate(dynamodb, stack_env.pipelines_table, stack_env.ratings_table) == 0
    item = dynamodb.get_item(TableName=stack_env.pipelines_table, Key={"pipelineId": {"S": record.pipeline_id}})
    assert item["Item"]["listPartition"] == {"S": list_partition(record.pipeline_id)}
    assert "ratingSum" not in item["Item"]
    assert ratings.totals([record.pipeline_id], consistent=True) == {record.pipeline_id: (14, 3)}
