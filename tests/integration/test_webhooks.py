"""Webhooks on moto: submission checks, events from the out-queue path, signed deliveries verified by the Standard
Webhooks reference library, retries with one webhook-id, 410, the DLQ, the delivery log and the secret API."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from functions.dlq.handler import lambda_handler as dlq_handler
from functions.results.handler import lambda_handler as results_handler
from functions.webhooks import address
from local.consumers import lambda_context, queue_arn, sqs_record
from shared.aws import client
from shared.messages import InQueueMessage
from shared.queues import QueueClient
from shared.settings import Settings, get_settings
from tests.integration.executions_support import (
    TXT2TXT,
    api_event,
    call_api,
    make_pipeline,
    new_id,
    out_event,
    private_queues,
    progress,
    queue_pair,
    received_bodies,
    sqs_event,
    submit,
)
from tests.integration.webhook_receiver import Receiver, running_receiver

PUBLIC_IP = "93.184.216.34"


def _env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    url, dlq = queue_pair(stack_env, f"t-{uuid.uuid4().hex[:10]}-webhooks", 180, 5)
    monkeypatch.setenv("WEBHOOK_QUEUE_URL", url)
    monkeypatch.setenv("WEBHOOK_DLQ_URL", dlq)
    monkeypatch.setenv("WEBHOOK_RETRY_DELAYS_S", "[0, 0, 0]")  # fast retries: the schedule is a setting
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return private_queues(stack_env, monkeypatch)  # reads the settings again, with the above


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Private queues, and plain http to loopback allowed (the receivers of these tests)."""
    return _env(stack_env, monkeypatch, WEBHOOK_ALLOW_LOOPBACK_HTTP="true")


@pytest.fixture
def strict_env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """As deployed: https only, no loopback."""
    return _env(stack_env, monkeypatch, WEBHOOK_ALLOW_LOOPBACK_HTTP="false")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver()) as running:
        yield running


def call_webhooks(method: str, path: str, user_id: str | None, **kwargs: Any) -> tuple[int, Any]:
    from functions.webhooks.handler import lambda_handler

    response = lambda_handler(api_event(method, path, user_id, **kwargs), lambda_context("webhooks"))  # type: ignore[arg-type]
    body = response.get("body")
    return response["statusCode"], json.loads(body) if body else None


def secret_of(user: str) -> str:
    status, body = call_webhooks("GET", "/users/me/webhook-secret", user)
    assert status == 200
    return str(body["secret"])


def results(env: Settings, *bodies: str) -> None:
    response = results_handler(sqs_event(list(bodies), env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    assert response == {"batchItemFailures": []}


def send_webhooks(env: Settings, rounds: int = 10) -> int:
    """Run the webhook sender over its queue, as its event source mapping would, until the queue is empty."""
    from functions.webhooks.sender_handler import lambda_handler

    queues, handled = QueueClient(client("sqs", env)), 0
    for _ in range(rounds):
        messages = queues.receive(env.webhook_queue_url, max_messages=10, wait_s=0)
        if not messages:
            return handled
        event = {"Records": [sqs_record(m, queue_arn(env.webhook_queue_url, env.region), env.region) for m in messages]}
        response = lambda_handler(event, lambda_context("webhooksender"))  # type: ignore[arg-type]
        assert response == {"batchItemFailures": []}
        for message in messages:
            queues.delete(env.webhook_queue_url, message.receipt_handle)
        handled += len(messages)
    return handled


def run_with_webhook(user: str, url: str, events: list[str] | None = None) -> str:
    pipeline_id = make_pipeline(get_settings(), [TXT2TXT])
    body: dict[str, Any] = {"variables": {"subject": "x"}, "webhook": url}
    if events is not None:
        body["webhookEvents"] = events
    status, execution = submit(pipeline_id, user, body)
    assert status == 202, execution
    return str(execution["executionId"])


def deliveries(user: str, execution_id: str, **query: str) -> tuple[int, Any]:
    return call_webhooks("GET", f"/executions/{execution_id}/webhook-deliveries", user, query=query or None)


# --- deliveries ---


def test_failed_deliveries_are_retried_with_one_webhook_id_and_verify_with_the_reference_library(
    env: Settings, receiver: Receiver
) -> None:
    user = new_id()
    receiver.secret = secret_of(user)
    receiver.script = [500, 500, 200]
    execution_id = run_with_webhook(user, receiver.url, ["started", "completed"])
    results(env, out_event(execution_id, "started"))
    assert send_webhooks(env) == 3
    assert len(receiver.received) == 3
    assert {r.webhook_id for r in receiver.received} == {receiver.received[0].webhook_id}
    assert all(r.error is None for r in receiver.received), [r.error for r in receiver.received]
    payload = receiver.received[-1].verified
    assert payload["type"] == "execution.started"
    assert (payload["data"]["executionId"], payload["data"]["status"]) == (execution_id, "RUNNING")

    status, page = deliveries(user, execution_id)
    assert status == 200
    assert [(d["attempt"], d["status"]) for d in page["items"]] == [(3, 200), (2, 500), (1, 500)]
    assert {d["webhookId"] for d in page["items"]} == {receiver.received[0].webhook_id}
    assert page["items"][0]["error"] is None
    assert page["items"][1]["error"] == "the receiver answered 500"


def test_completed_arrives_for_succeeded_failed_and_cancelled(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    receiver.secret = secret_of(user)
    succeeded, failed, cancelled, dead = (run_with_webhook(user, receiver.url) for _ in range(4))
    results(
        env,
        out_event(succeeded, "started"),  # not subscribed: the default is ["completed"]
        out_event(succeeded, "finished", success=True, status="SUCCEEDED"),
        out_event(failed, "finished", success=False, status="FAILED", error={"code": "BAD_INPUT", "message": "no"}),
    )
    status, _ = call_api("POST", f"/executions/{cancelled}/cancel", user)
    assert status == 202
    message = InQueueMessage(executionId=dead, resUri=f"s3://{env.results_bucket}/x/request.json")
    assert dlq_handler(sqs_event([message.to_json()], env.backend_dlqs["gpu-fleet"]), lambda_context("dlq")) == {  # type: ignore[arg-type]
        "batchItemFailures": []
    }
    send_webhooks(env)
    by_execution = {r.verified["data"]["executionId"]: r.verified for r in receiver.received}
    assert all(r.error is None for r in receiver.received)
    assert {e: by_execution[e]["data"]["status"] for e in (succeeded, failed, cancelled, dead)} == {
        succeeded: "SUCCEEDED",
        failed: "FAILED",
        cancelled: "CANCELLED",
        dead: "FAILED",
    }
    assert {p["type"] for p in by_execution.values()} == {"execution.completed"}
    assert len(receiver.received) == 4


def test_gone_stops_every_later_delivery_of_the_execution(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    receiver.script = [410]
    execution_id = run_with_webhook(user, receiver.url, ["started", "progress", "completed"])
    results(env, out_event(execution_id, "started"))
    send_webhooks(env)
    results(
        env,
        out_event(execution_id, "progress", progress=progress(50)),
        out_event(execution_id, "finished", success=True, status="SUCCEEDED"),
    )
    send_webhooks(env)
    assert [r.type for r in receiver.received] == ["execution.started"]
    _, page = deliveries(user, execution_id)
    assert [d["status"] for d in page["items"]] == [410]


def test_progress_goes_out_at_most_every_interval(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    execution_id = run_with_webhook(user, receiver.url, ["started", "progress"])
    results(
        env,
        out_event(execution_id, "progress", progress=progress(10)),  # overtook "started": it starts the execution
        out_event(execution_id, "progress", progress=progress(20)),
        out_event(execution_id, "progress", progress=progress(30)),
        out_event(execution_id, "started"),  # late: applies nothing, publishes nothing
    )
    send_webhooks(env)
    payloads = sorted((json.loads(r.body) for r in receiver.received), key=lambda p: str(p["type"]))
    assert [(p["type"], p["data"]["progress"]["percent"]) for p in payloads] == [
        ("execution.progress", 10),
        ("execution.started", 10),
    ]


def test_retries_exhausted_go_to_the_dlq(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    receiver.default = 503
    execution_id = run_with_webhook(user, receiver.url)
    results(env, out_event(execution_id, "finished", success=True, status="SUCCEEDED"))
    send_webhooks(env)
    assert len(receiver.received) == 4  # the first attempt and one per delay of [0, 0, 0]
    dead = received_bodies(env, env.webhook_dlq_url)
    assert [(d["executionId"], d["attempt"]) for d in dead] == [(execution_id, 4)]


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(
    stack_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    env = _env(stack_env, monkeypatch, WEBHOOK_ALLOW_LOOPBACK_HTTP="true", WEBHOOK_TIMEOUT_S="0.5")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        user = new_id()
        execution_id = run_with_webhook(user, f"http://127.0.0.1:{silent.getsockname()[1]}/x")
        monkeypatch.setenv("WEBHOOK_RETRY_DELAYS_S", "[0]")
        get_settings.cache_clear()
        results(get_settings(), out_event(execution_id, "finished", success=True, status="SUCCEEDED"))
        send_webhooks(get_settings())
    finally:
        silent.close()
    _, page = deliveries(user, execution_id)
    assert [d["status"] for d in page["items"]] == [None, None]
    assert "no answer within 0.5 s" in page["items"][0]["error"]
    assert env.webhook_queue_url


# --- SSRF: at submission and at delivery ---

SUBMISSION_FORMS = [
    "http://hooks.example.com/x",
    "https://127.0.0.1/x",
    "https://2130706433/x",
    "https://0x7f.1/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.5/x",
    "https://224.0.0.1/x",
    "https://localhost/x",
    "https://rebind.example.com/x",  # resolves to loopback (the injected resolver below)
]


def test_every_forbidden_webhook_is_refused_at_submission(
    strict_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = {"rebind.example.com": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"]}
    monkeypatch.setattr(address, "system_resolver", lambda host, port: resolved.get(host, [PUBLIC_IP]))
    pipeline_id = make_pipeline(strict_env, [TXT2TXT])
    for url in SUBMISSION_FORMS:
        status, body = submit(pipeline_id, new_id(), {"variables": {"subject": "x"}, "webhook": url})
        assert status == 422, (url, body)
        assert body["details"][0]["loc"] == ["body", "webhook"]
    assert received_bodies(strict_env, strict_env.backend_queues["gpu-fleet"]) == []
    status, _ = submit(pipeline_id, new_id(), {"variables": {"subject": "x"}, "webhook": "https://hooks.example.com/x"})
    assert status == 202


def test_webhook_events_are_validated(strict_env: Settings) -> None:
    pipeline_id = make_pipeline(strict_env, [TXT2TXT])
    for body in (
        {"webhookEvents": ["completed"]},  # without a webhook
        {"webhook": "https://93.184.216.34/x", "webhookEvents": ["finished"]},
        {"webhook": "https://93.184.216.34/x", "webhookEvents": []},
        {"webhook": 5},
    ):
        status, answer = submit(pipeline_id, new_id(), {"variables": {"subject": "x"}, **body})
        assert status == 422, (body, answer)


def test_a_webhook_whose_dns_changed_after_submission_is_refused_at_delivery(
    strict_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every form is refused at delivery in tests/unit/test_webhook_sender.py; here the whole path, for two."""
    answers = {"one.example.com": [PUBLIC_IP], "two.example.com": [PUBLIC_IP]}
    monkeypatch.setattr(address, "system_resolver", lambda host, port: answers[host])
    monkeypatch.setattr(
        "functions.webhooks.delivery.post", lambda *a, **k: pytest.fail("a refused address must not be called")
    )
    user = new_id()
    first, second = (run_with_webhook(user, f"https://{host}/in") for host in answers)
    answers.update({"one.example.com": ["127.0.0.1"], "two.example.com": ["::ffff:169.254.169.254"]})
    results(
        strict_env,
        *(out_event(e, "finished", success=True, status="SUCCEEDED") for e in (first, second)),
    )
    send_webhooks(strict_env)
    for execution_id in (first, second):
        _, page = deliveries(user, execution_id)
        assert len(page["items"]) == 4  # every attempt refused, none connected
        assert all(d["status"] is None and "not allowed" in d["error"] for d in page["items"])


# --- the secret and the delivery log ---


def test_the_secret_is_created_on_first_use_and_rotated_on_post(env: Settings) -> None:
    user = new_id()
    first = secret_of(user)
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert secret_of(user) == first
    status, rotated = call_webhooks("POST", "/users/me/webhook-secret", user)
    assert status == 200
    assert rotated["secret"] != first
    assert secret_of(user) == rotated["secret"]
    assert secret_of(new_id()) != rotated["secret"]
    assert call_webhooks("GET", "/users/me/webhook-secret", None)[0] == 401
    from functions.webhooks.handler import lambda_handler

    answer = lambda_handler(api_event("GET", "/users/me/webhook-secret", user), lambda_context("webhooks"))  # type: ignore[arg-type]
    assert answer["multiValueHeaders"]["Cache-Control"] == ["no-store"]


def test_after_a_rotation_deliveries_verify_with_the_new_and_the_old_secret(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    old = secret_of(user)
    _, rotated = call_webhooks("POST", "/users/me/webhook-secret", user)
    execution_id = run_with_webhook(user, receiver.url)
    results(env, out_event(execution_id, "finished", success=True, status="SUCCEEDED"))
    send_webhooks(env)
    (delivered,) = receiver.received
    for secret in (rotated["secret"], old):
        assert Webhook(secret).verify(delivered.body, delivered.headers)["type"] == "execution.completed"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(delivered.body, delivered.headers)


def test_the_delivery_log_is_the_owners_only_and_pages(env: Settings, receiver: Receiver) -> None:
    user = new_id()
    receiver.script = [500, 500]
    execution_id = run_with_webhook(user, receiver.url)
    results(env, out_event(execution_id, "finished", success=True, status="SUCCEEDED"))
    send_webhooks(env)
    assert deliveries(new_id(), execution_id)[0] == 404
    assert deliveries(user, new_id())[0] == 404
    assert deliveries(user, "../x")[0] == 404
    status, first = deliveries(user, execution_id, limit="2")
    assert status == 200
    assert len(first["items"]) == 2
    assert first["nextCursor"]
    _, rest = deliveries(user, execution_id, limit="2", cursor=first["nextCursor"])
    assert [d["attempt"] for d in first["items"] + rest["items"]] == [3, 2, 1]
    assert rest["nextCursor"] is None
    assert deliveries(user, execution_id, cursor="bm90LWEtY3Vyc29y")[0] == 400
    assert deliveries(user, execution_id, limit="0")[0] == 422
