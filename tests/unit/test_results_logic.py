"""Which transition each out-queue event asks for, and when it counts as one (no network: a fake store)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.results.logic import apply_out_event
from shared.messages import ExecutionStatus, parse_out_message
from tests.unit.execution_fakes import FakeStore, record

AT = "2026-01-01T00:00:05.000Z"


def message(event: str, **fields: Any) -> Any:
    body = {"executionId": "e1", "executionUri": None, "version": 1, "event": event, "at": AT} | fields
    return parse_out_message(json.dumps(body))


def test_started_moves_a_queued_execution_to_running() -> None:
    store = FakeStore(record())
    assert apply_out_event(store, message("started")) is ExecutionStatus.RUNNING  # type: ignore[arg-type]
    assert store.writes == [("mark_started", {"at": AT})]


def test_a_write_whose_condition_fails_is_no_transition() -> None:
    store = FakeStore(record(), applies=False)
    assert apply_out_event(store, message("started")) is None  # type: ignore[arg-type]
    assert apply_out_event(store, message("finished", success=True)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("event", ["started", "progress", "finished"])
def test_missing_or_final_executions_are_never_written(event: str) -> None:
    progress = {"stage": 1, "stages": 1, "percent": 5}
    for store in (FakeStore(None), FakeStore(record(ExecutionStatus.CANCELLED))):
        assert apply_out_event(store, message(event, progress=progress)) is None  # type: ignore[arg-type]
        assert store.writes == []


def test_progress_on_a_queued_execution_counts_as_its_start_but_not_on_a_running_one() -> None:
    progress = {"stage": 1, "stages": 2, "step": 3, "steps": 10, "percent": 15}
    queued = FakeStore(record())
    assert apply_out_event(queued, message("progress", progress=progress)) is ExecutionStatus.RUNNING  # type: ignore[arg-type]
    assert queued.writes == [("record_progress", {"progress": progress, "at": AT})]
    running = FakeStore(record(ExecutionStatus.RUNNING))
    assert apply_out_event(running, message("progress", progress=progress)) is None  # type: ignore[arg-type]
    assert len(running.writes) == 1


def test_progress_without_progress_is_ignored() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    assert apply_out_event(store, message("progress")) is None  # type: ignore[arg-type]
    assert store.writes == []


def test_success_records_the_result_and_full_progress() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING, progress={"stage": 2, "stages": 2, "step": 7, "steps": 25}))
    uri = "s3://results/executions/e1/result.json"
    assert apply_out_event(store, message("finished", success=True, executionUri=uri)) is ExecutionStatus.SUCCEEDED  # type: ignore[arg-type]
    ((name, kwargs),) = store.writes
    assert name == "finish"
    assert kwargs["status"] is ExecutionStatus.SUCCEEDED
    assert kwargs["result_uri"] == uri
    assert kwargs["error"] is None
    assert kwargs["progress"] == {"stage": 2, "stages": 2, "step": 25, "steps": 25, "percent": 100}
    assert kwargs["started"] is True


def test_failure_keeps_the_error_and_no_result_uri() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    error = {"code": "OUT_OF_MEMORY", "message": "CUDA out of memory"}
    assert apply_out_event(store, message("finished", error=error, executionUri="s3://b/k")) is ExecutionStatus.FAILED  # type: ignore[arg-type]
    kwargs = store.writes[0][1]
    assert kwargs["error"] == error
    assert kwargs["result_uri"] is None
    assert kwargs["progress"] is None


def test_failure_without_an_error_still_says_why() -> None:
    store = FakeStore(record(ExecutionStatus.RUNNING))
    apply_out_event(store, message("finished", success=False))  # type: ignore[arg-type]
    assert store.writes[0][1]["error"]["code"] == "FAILED"


@pytest.mark.parametrize(("status", "started"), [(ExecutionStatus.QUEUED, False), (ExecutionStatus.RUNNING, True)])
def test_a_cancelled_execution_gets_a_start_only_if_it_ran(status: ExecutionStatus, started: bool) -> None:
    store = FakeStore(record(status))
    assert apply_out_event(store, message("finished", status="CANCELLED")) is ExecutionStatus.CANCELLED  # type: ignore[arg-type]
    assert store.writes[0][1]["started"] is started
