"""The results consumer on moto: duplicates and out-of-order out-queue events never regress an execution."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.results.handler import lambda_handler
from local.consumers import QueueConsumers, lambda_context
from shared.aws import client
from shared.models import ExecutionRecord
from shared.settings import Settings
from tests.integration.executions_support import (
    TXT2IMG,
    TXT2TXT,
    call_api,
    make_pipeline,
    new_id,
    out_event,
    private_queues,
    progress,
    sqs_event,
    submit,
    write_results,
)


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return private_queues(stack_env, monkeypatch)


@pytest.fixture
def owned(env: Settings) -> tuple[str, str]:
    """(user, executionId) of a freshly QUEUED execution."""
    user = new_id()
    pipeline_id = make_pipeline(env, [TXT2TXT, TXT2IMG])
    status, body = submit(pipeline_id, user, {"variables": {"subject": "x"}})
    assert status == 202
    return user, body["executionId"]


def deliver(env: Settings, *bodies: str) -> dict[str, Any]:
    """Hand the consumer one batch, as the event source mapping does."""
    return lambda_handler(sqs_event(list(bodies), env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]


def execution(user: str, execution_id: str) -> dict[str, Any]:
    status, body = call_api("GET", f"/executions/{execution_id}", user)
    assert status == 200
    return body  # type: ignore[no-any-return]


def test_in_order_events_take_an_execution_to_succeeded(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    assert deliver(env, out_event(execution_id, "started", at="2026-01-01T00:00:01.000Z")) == {"batchItemFailures": []}
    running = execution(user, execution_id)
    assert running["status"] == "RUNNING"
    assert running["startedAt"] == "2026-01-01T00:00:01.000Z"

    deliver(env, out_event(execution_id, "progress", progress=progress(40, stage=1, stages=2, step=8, steps=10)))
    assert execution(user, execution_id)["progress"] == progress(40, stage=1, stages=2, step=8, steps=10)

    uri = write_results(env, execution_id)
    deliver(env, out_event(execution_id, "finished", success=True, executionUri=uri, at="2026-01-01T00:00:09.000Z"))
    done = execution(user, execution_id)
    assert done["status"] == "SUCCEEDED"
    assert done["finishedAt"] == "2026-01-01T00:00:09.000Z"
    assert done["startedAt"] == "2026-01-01T00:00:01.000Z"
    assert done["progress"] == {"stage": 2, "stages": 2, "step": 10, "steps": 10, "percent": 100}
    assert done["error"] is None
    assert ExecutionRecord.get(execution_id).result_uri == uri
    assert call_api("GET", "/executions", user, query={"status": "SUCCEEDED"})[1]["items"][0]["executionId"] == (
        execution_id
    )
    assert call_api("GET", "/executions", user, query={"status": "RUNNING"})[1]["items"] == []


def test_duplicates_change_nothing(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    started = out_event(execution_id, "started", at="2026-01-01T00:00:01.000Z")
    deliver(env, started, started)
    deliver(env, out_event(execution_id, "started", at="2026-01-01T00:00:05.000Z"))
    assert execution(user, execution_id)["startedAt"] == "2026-01-01T00:00:01.000Z"
    finished = out_event(execution_id, "finished", error={"code": "BAD_INPUT", "message": "no such scheduler"})
    assert deliver(env, finished, finished) == {"batchItemFailures": []}
    first = execution(user, execution_id)
    deliver(env, finished)
    assert execution(user, execution_id) == first
    assert first["status"] == "FAILED"
    assert first["error"] == {"code": "BAD_INPUT", "message": "no such scheduler"}


def test_finished_before_started_sticks(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    deliver(env, out_event(execution_id, "finished", success=True, executionUri=write_results(env, execution_id)))
    deliver(env, out_event(execution_id, "started"))
    deliver(env, out_event(execution_id, "progress", progress=progress(50)))
    body = execution(user, execution_id)
    assert body["status"] == "SUCCEEDED"
    assert body["progress"]["percent"] == 100
    assert body["startedAt"] is not None  # it did run, even if its started event came late


def test_progress_never_goes_backwards_and_starts_a_queued_execution(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    deliver(env, out_event(execution_id, "progress", progress=progress(60, step=6)))
    body = execution(user, execution_id)
    assert body["status"] == "RUNNING"  # progress overtook started
    assert body["startedAt"] is not None
    deliver(env, out_event(execution_id, "progress", progress=progress(30, step=3)))
    deliver(env, out_event(execution_id, "progress", progress=progress(60, step=6)))
    assert execution(user, execution_id)["progress"]["percent"] == 60
    deliver(env, out_event(execution_id, "started"))
    assert execution(user, execution_id)["status"] == "RUNNING"
    deliver(env, out_event(execution_id, "progress", progress=progress(90, step=9)))
    assert execution(user, execution_id)["progress"] == progress(90, step=9)


def test_a_second_finished_with_another_status_is_ignored(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    deliver(env, out_event(execution_id, "started"))
    deliver(env, out_event(execution_id, "finished", status="CANCELLED"))
    deliver(env, out_event(execution_id, "finished", success=True, executionUri="s3://b/k"))
    deliver(env, out_event(execution_id, "finished", error={"code": "TIMEOUT", "message": "deadline passed"}))
    body = execution(user, execution_id)
    assert body["status"] == "CANCELLED"
    assert body["error"] is None
    assert ExecutionRecord.get(execution_id).result_uri is None


def test_worker_cancel_of_a_queued_execution_has_no_start(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    deliver(env, out_event(execution_id, "finished", status="CANCELLED"))
    body = execution(user, execution_id)
    assert body["status"] == "CANCELLED"
    assert body["startedAt"] is None


def test_events_of_a_deleted_or_unknown_execution_create_nothing(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    assert call_api("DELETE", f"/executions/{execution_id}", user)[0] == 204
    unknown = new_id()
    response = deliver(
        env,
        out_event(execution_id, "started"),
        out_event(execution_id, "progress", progress=progress(10)),
        out_event(execution_id, "finished", success=True, executionUri="s3://b/k"),
        out_event(unknown, "finished", success=True, executionUri="s3://b/k"),
    )
    assert response == {"batchItemFailures": []}
    for missing in (execution_id, unknown):
        with pytest.raises(ExecutionRecord.DoesNotExist):
            ExecutionRecord.get(missing)


def test_poison_messages_are_dropped_not_retried(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    poison = [
        "not json",
        json.dumps({"executionId": execution_id, "event": "exploded", "version": 1}),
        json.dumps({"executionId": execution_id, "event": "started", "version": 2}),
        json.dumps({"executionId": execution_id, "event": "finished", "status": "RUNNING", "version": 1}),
    ]
    response = deliver(env, *poison, out_event(execution_id, "started"))
    assert response == {"batchItemFailures": []}  # nothing comes back
    assert execution(user, execution_id)["status"] == "RUNNING"  # the good record of the batch still applied


def test_a_database_outage_reports_only_that_record(
    env: Settings, owned: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, execution_id = owned
    other_user, other_id = new_id(), None
    _status, body = submit(make_pipeline(env, [TXT2TXT]), other_user, {"variables": {"subject": "x"}})
    other_id = body["executionId"]
    from functions.executions.store import ExecutionStore, StoreUnavailable

    real_start = ExecutionStore.mark_started

    def flaky_start(self: ExecutionStore, wanted: str, *args: Any) -> ExecutionRecord | None:
        if wanted == execution_id:
            raise StoreUnavailable("throttled")
        return real_start(self, wanted, *args)

    monkeypatch.setattr(ExecutionStore, "mark_started", flaky_start)
    event = sqs_event([out_event(execution_id, "started"), out_event(other_id, "started")], env.out_queue_url)
    response = lambda_handler(event, lambda_context("results"))  # type: ignore[arg-type]
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    monkeypatch.setattr(ExecutionStore, "mark_started", real_start)
    assert execution(other_user, other_id)["status"] == "RUNNING"
    assert execution(user, execution_id)["status"] == "QUEUED"


def test_queue_consumers_apply_out_queue_messages_and_delete_them(env: Settings, owned: tuple[str, str]) -> None:
    user, execution_id = owned
    sqs = client("sqs", env)
    uri = write_results(env, execution_id)
    for body in (
        out_event(execution_id, "finished", success=True, executionUri=uri),
        out_event(execution_id, "started"),
        "poison",
    ):
        sqs.send_message(QueueUrl=env.out_queue_url, MessageBody=body)
    consumers = QueueConsumers(env)
    handled = 0
    for _ in range(5):
        handled += consumers.poll_once()
    assert handled == 3
    assert execution(user, execution_id)["status"] == "SUCCEEDED"
    attributes = sqs.get_queue_attributes(QueueUrl=env.out_queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_queue_consumer_threads_start_and_stop(env: Settings, owned: tuple[str, str]) -> None:
    import time

    user, execution_id = owned
    with QueueConsumers(env):
        client("sqs", env).send_message(QueueUrl=env.out_queue_url, MessageBody=out_event(execution_id, "started"))
        deadline = time.monotonic() + 15
        while execution(user, execution_id)["status"] != "RUNNING":
            assert time.monotonic() < deadline, "the consumer never applied the event"
            time.sleep(0.2)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5


def test_metrics_count_only_real_transitions(
    env: Settings, owned: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.results import handler
    from shared import telemetry

    user, execution_id = owned
    emitted: list[str] = []
    monkeypatch.setattr(handler.metrics, "add_metric", lambda name, **_: emitted.append(name))
    started = out_event(execution_id, "started")
    deliver(env, started, started, out_event(execution_id, "progress", progress=progress(20)))
    finished = out_event(execution_id, "finished", error={"code": "TIMEOUT", "message": "deadline passed"})
    deliver(env, finished, finished, out_event(execution_id, "finished", status="CANCELLED"))
    assert emitted == [telemetry.EXECUTIONS_STARTED, telemetry.EXECUTIONS_FAILED]
    assert execution(user, execution_id)["status"] == "FAILED"
