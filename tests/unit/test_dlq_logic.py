"""The dead-letter decision: fail open executions with RETRIES_EXHAUSTED (freeing their slot), leave final and
missing ones alone."""

from __future__ import annotations

import pytest

from functions.dlq.logic import RETRIES_EXHAUSTED, fail_dead_lettered
from shared import resources as res
from shared.messages import ExecutionStatus, InQueueMessage
from tests.unit.execution_fakes import FakeStore, fake_deps, record

MESSAGE = InQueueMessage(executionId="e1", resUri="s3://results/executions/e1/request.json")


@pytest.mark.parametrize("status", [ExecutionStatus.QUEUED, ExecutionStatus.RUNNING])
def test_open_executions_fail_with_the_reason(status: ExecutionStatus) -> None:
    store = FakeStore(record(status))
    assert fail_dead_lettered(fake_deps(store), MESSAGE) is True
    ((name, kwargs),) = store.writes
    assert name == "finish"
    assert kwargs["status"] is ExecutionStatus.FAILED
    assert kwargs["error"]["code"] == RETRIES_EXHAUSTED
    receives = res.in_queue_spec("gpu-fleet").max_receive_count
    assert f"after {receives} receives" in kwargs["error"]["message"]
    assert kwargs["from_status"] is status  # a queued one never gets a startedAt
    assert store.released == [("u1", "e1", 0.0)]


@pytest.mark.parametrize("status", [ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED])
def test_final_executions_are_left_alone(status: ExecutionStatus) -> None:
    store = FakeStore(record(status))
    assert fail_dead_lettered(fake_deps(store), MESSAGE) is False
    assert store.writes == []


def test_missing_executions_are_no_failure() -> None:
    assert fail_dead_lettered(fake_deps(FakeStore(None)), MESSAGE) is False
