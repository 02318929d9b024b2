"""Which write each out-queue event makes, when it counts as a transition, and what the consumer refuses
(no network: a fake store whose conditional writes hold as DynamoDB's would)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.results.logic import apply_out_event
from shared.messages import ExecutionStatus, parse_out_message
from tests.unit.execution_fakes import FakeStore, fake_deps, record

AT = "2026-01-01T00:00:05.000Z"
OWN_RESULT = "s3://results/executions/e1/result.json"


def message(event: str, **fields: Any) -> Any:
    body = {"executionId": "e1", "executionUri": None, "version": 1, "event": event, "at": AT} | fields
    return parse_out_message(json.dumps(body))


def test_started_moves_a_queued_execution_to_running_without_reading_it() -> None:
    store = FakeStore(record())
    assert apply_out_event(fake_deps(store), message("started", userId="u1")) is ExecutionStatus.RUNNING
    assert store.writes == [("mark_started", {"at": AT})]


def test_a_redelivered_finished_event_publishes_its_webhook_event_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer killed between its final write and the publish loses no `completed` webhook event."""
    published: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "functions.results.logic.publish_execution_change",
        lambda rec, kind: published.append((rec.execution_id, kind.value)) if rec is not None else None,
    )
    finished = message("finished", success=True, executionUri=OWN_RESULT, userId="u1")
    assert apply_out_event(fake_deps(FakeStore(record(ExecutionStatus.RUNNING))), finished) is ExecutionStatus.SUCCEEDED
    done = FakeStore(record(ExecutionStatus.SUCCEEDED))  # the first delivery's write stands
    assert apply_out_event(fake_deps(done), finished) is None  # the redelivery: no transition, one more publish
    assert published == [("e1", "completed"), ("e1", "completed")]
    failed_later = message("finished", error={"code": "X", "message": "late"}, userId="u1")
    assert apply_out_event(fake_deps(done), failed_later) is None  # another final status: nothing to repeat
    assert len(published) == 2


def test_a_write_whose_condition_fails_is_no_transition() -> None:
    store = FakeStore(record(ExecutionStatus.SUCCEEDED))
    assert apply_out_event(fake_deps(store), message("started")) is None
    assert apply_out_event(fake_deps(store), message("finished", success=True, executionUri=OWN_RESULT)) is None
    assert store.released == []


@pytest.mark.parametrize("event", ["started", "progress", "finished"])
def test_missing_executions_are_never_written(event: str) -> None:
    store = FakeStore(None)
    deps = fake_deps(store)
    progress = {"stage": 1, "stages": 1, "percent": 5}
    assert apply_out_event(deps, message(event, progress=progress, executionId="gone")) is None
    assert [name for name, _ in store.writes if name != "record_progress"] == []
    if event == "finished":
        assert deps.blobs.purged == ["executions/gone/"]  # outputs written while it was deleted


def test_progress_on_a_queued_execution_counts_as_its_start_but_not_on_a_running_one() -> None:
    progress = {"stage": 1, "stages": 2, "step": 3, "steps": 10, "percent": 15}
    queued = FakeStore(record())
    assert apply_out_event(fake_deps(queued), message("progress", progress=progress)) is ExecutionStatus.RUNNING
    assert [name for name, _ in queued.writes] == ["record_progress", "start_with_progress"]
    running = FakeStore(record(ExecutionStatus.RUNNING))
    assert apply_out_event(fake_deps(running), message("progress", progress=progress)) is None
    assert running.writes == [("record_progress", {"progress": progress})]


def test_progress_is_written_at_most_every_interval_per_execution() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING, execution_id="e-throttle"))
    deps = fake_deps(store, progress_write_interval_s=2.0)
    for second, percent in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]:
        event = message("progress", executionId="e-throttle", at=f"2026-01-01T00:00:0{second}.000Z")
        event.progress = (
            event.progress
            or parse_out_message(
                json.dumps(
                    {"executionId": "x", "event": "progress", "progress": {"stage": 1, "stages": 1, "percent": 1}}
                )
            ).progress
        )
        event.progress.percent = percent
        apply_out_event(deps, event)
    assert [kwargs["progress"]["percent"] for _, kwargs in store.writes] == [10, 30, 50]


def test_progress_without_progress_is_ignored() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    assert apply_out_event(fake_deps(store), message("progress")) is None
    assert store.writes == []


def test_success_records_the_result_and_usage_and_frees_the_slot() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    usage = {"gpuSeconds": 7.5, "stages": [{"stage": 0, "seconds": 7.5}]}
    finished = message("finished", success=True, executionUri=OWN_RESULT, usage=usage)
    assert apply_out_event(fake_deps(store), finished) is ExecutionStatus.SUCCEEDED
    ((name, kwargs),) = store.writes
    assert name == "finish"
    assert kwargs["status"] is ExecutionStatus.SUCCEEDED
    assert kwargs["result_uri"] == OWN_RESULT
    assert kwargs["error"] is None
    assert kwargs["usage"] == usage
    assert store.released == [("u1", "e1", 7.5)]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://results/executions/other/result.json",  # another execution's outputs
        "s3://elsewhere/executions/e1/result.json",  # another bucket
        "s3://results/executions/e1/../other/result.json",
        "s3://results/uploads/u1/x",
        "https://results/executions/e1/result.json",
    ],
)
def test_a_result_uri_outside_the_executions_own_prefix_is_refused(uri: str) -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    assert apply_out_event(fake_deps(store), message("finished", success=True, executionUri=uri)) is None
    assert store.writes == []
    assert store.released == []


def test_failure_keeps_the_error_and_no_result_uri() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    error = {"code": "OUT_OF_MEMORY", "message": "CUDA out of memory"}
    finished = message("finished", error=error, executionUri="s3://b/k")
    assert apply_out_event(fake_deps(store), finished) is ExecutionStatus.FAILED
    kwargs = store.writes[0][1]
    assert kwargs["error"] == error
    assert kwargs["result_uri"] is None
    assert kwargs["progress"] is None


def test_failure_without_an_error_still_says_why() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    apply_out_event(fake_deps(store), message("finished", success=False))
    assert store.writes[0][1]["error"]["code"] == "FAILED"


@pytest.mark.parametrize(
    ("status", "writes"),
    [
        (ExecutionStatus.QUEUED, [ExecutionStatus.RUNNING, ExecutionStatus.QUEUED]),
        (ExecutionStatus.RUNNING, [ExecutionStatus.RUNNING]),
    ],
)
def test_a_cancelled_execution_gets_a_start_only_if_it_ran(status: ExecutionStatus, writes: list[Any]) -> None:
    store = FakeStore(record(status))
    assert apply_out_event(fake_deps(store), message("finished", status="CANCELLED")) is ExecutionStatus.CANCELLED
    assert [kwargs["from_status"] for _, kwargs in store.writes] == writes
