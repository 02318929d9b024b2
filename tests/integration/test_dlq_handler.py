"""The dead-letter path on moto: an in-queue message no worker completes is redriven to the DLQ by SQS itself
(maxReceiveCount), and the DLQ consumer fails its execution with the reason."""

from __future__ import annotations

import json

import pytest

from functions.dlq.handler import lambda_handler
from functions.dlq.logic import RETRIES_EXHAUSTED
from local.consumers import QueueConsumers, lambda_context
from shared import resources as res
from shared.aws import client
from shared.settings import Settings
from tests.integration.executions_support import (
    TXT2TXT,
    call_api,
    make_pipeline,
    new_id,
    out_event,
    private_queues,
    sqs_event,
    submit,
    write_results,
)


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return private_queues(stack_env, monkeypatch)


def _queued(env: Settings) -> tuple[str, str]:
    user = new_id()
    status, body = submit(make_pipeline(env, [TXT2TXT]), user, {"variables": {"subject": "x"}})
    assert status == 202
    return user, body["executionId"]


def _count(env: Settings, queue_url: str) -> int:
    attributes = client("sqs", env).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_message_that_exhausts_its_receives_fails_the_execution(env: Settings) -> None:
    user, execution_id = _queued(env)
    in_queue, dlq = env.backend_queues[res.DEFAULT_BACKEND], env.backend_dlqs[res.DEFAULT_BACKEND]
    sqs = client("sqs", env)
    max_receives = res.in_queue_spec(res.DEFAULT_BACKEND).max_receive_count
    # A worker that crashes on it every time: received, never deleted, back at once (visibility 0).
    for attempt in range(1, max_receives + 1):
        (message,) = sqs.receive_message(QueueUrl=in_queue, VisibilityTimeout=0, AttributeNames=["All"])["Messages"]
        assert json.loads(message["Body"])["executionId"] == execution_id
        assert message["Attributes"]["ApproximateReceiveCount"] == str(attempt)
    # The next receive finds it gone: SQS moved it to the DLQ.
    assert sqs.receive_message(QueueUrl=in_queue, VisibilityTimeout=0).get("Messages") is None
    assert _count(env, dlq) == 1

    assert QueueConsumers(env).poll_once() == 1

    status, body = call_api("GET", f"/executions/{execution_id}", user)
    assert status == 200
    assert body["status"] == "FAILED"
    assert body["error"]["code"] == RETRIES_EXHAUSTED
    assert f"after {max_receives} receives" in body["error"]["message"]
    assert body["finishedAt"] is not None
    assert body["startedAt"] is None
    assert _count(env, dlq) == 0  # handled, so deleted


def test_a_final_execution_stays_as_it_is(env: Settings) -> None:
    user, execution_id = _queued(env)
    from functions.results.handler import lambda_handler as results_handler

    finished = out_event(execution_id, "finished", success=True, executionUri=write_results(env, execution_id))
    results_handler(sqs_event([finished], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    message = json.dumps({"executionId": execution_id, "resUri": "s3://b/request.json", "version": 1})
    dlq = env.backend_dlqs[res.DEFAULT_BACKEND]
    assert lambda_handler(sqs_event([message], dlq), lambda_context("dlq")) == {"batchItemFailures": []}  # type: ignore[arg-type]
    body = call_api("GET", f"/executions/{execution_id}", user)[1]
    assert body["status"] == "SUCCEEDED"
    assert body["error"] is None


def test_a_running_execution_is_failed_and_a_duplicate_changes_nothing(env: Settings) -> None:
    user, execution_id = _queued(env)
    from functions.results.handler import lambda_handler as results_handler

    started = out_event(execution_id, "started")
    results_handler(sqs_event([started], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    message = json.dumps({"executionId": execution_id, "resUri": "s3://b/request.json", "version": 1})
    dlq = env.backend_dlqs[res.DEFAULT_BACKEND]
    lambda_handler(sqs_event([message], dlq, receive_count=1), lambda_context("dlq"))  # type: ignore[arg-type]
    first = call_api("GET", f"/executions/{execution_id}", user)[1]
    assert first["status"] == "FAILED"
    assert first["startedAt"] is not None
    lambda_handler(sqs_event([message], dlq, receive_count=2), lambda_context("dlq"))  # type: ignore[arg-type]
    assert call_api("GET", f"/executions/{execution_id}", user)[1] == first


def test_unparseable_and_unknown_messages_are_dropped(env: Settings) -> None:
    dlq = env.backend_dlqs[res.DEFAULT_BACKEND]
    unknown = json.dumps({"executionId": new_id(), "resUri": "s3://b/request.json", "version": 1})
    response = lambda_handler(sqs_event(["{oops", '{"version": 9}', unknown], dlq), lambda_context("dlq"))  # type: ignore[arg-type]
    assert response == {"batchItemFailures": []}


def test_the_dead_letter_metric_counts_failed_executions_only(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.dlq import handler
    from shared import telemetry

    _, execution_id = _queued(env)
    emitted: list[str] = []
    monkeypatch.setattr(handler.metrics, "add_metric", lambda name, **_: emitted.append(name))
    message = json.dumps({"executionId": execution_id, "resUri": "s3://b/request.json", "version": 1})
    dlq = env.backend_dlqs[res.DEFAULT_BACKEND]
    lambda_handler(sqs_event([message, message, "junk"], dlq), lambda_context("dlq"))  # type: ignore[arg-type]
    assert emitted == [telemetry.EXECUTIONS_DEAD_LETTERED]
