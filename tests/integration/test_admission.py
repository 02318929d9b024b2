"""Fair share by admission on moto (API.md "Per-user fairness"): a user's burst waits in DynamoDB, in submission
order, behind at most `maxActiveExecutions` admitted ones; every end admits the next, exactly once; quotas answer
429; the sweep repairs what a lost event left behind."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.executions import admission
from functions.executions.dependencies import execution_deps
from functions.executions.handler import lambda_handler as executions_handler
from functions.results.handler import lambda_handler as results_handler
from functions.sweep.logic import sweep
from local.consumers import Sweeper, lambda_context
from shared import resources as res
from shared.messages import ExecutionStatus
from shared.models import AdmissionRecord, ExecutionRecord
from shared.settings import Settings, get_settings
from tests.integration.executions_support import (
    TXT2TXT,
    api_event,
    call_api,
    make_pipeline,
    new_id,
    out_event,
    private_queues,
    received_bodies,
    sqs_event,
    submit,
)

# The largest execution a pipeline may ask for: 16 stages of 4 images of 1024x1024 at 150 steps.
MAXIMAL_STAGE = {
    "type": "txt2img",
    "inline": True,
    "body": "a cathedral, every stone",
    "parameters": {"steps": 150, "width": 1024, "height": 1024, "numImages": 4},
}


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return private_queues(stack_env, monkeypatch)


def _in_queue(env: Settings) -> list[str]:
    """The execution ids now in the default in-queue (received and deleted)."""
    return [m["executionId"] for m in received_bodies(env, env.backend_queues[res.DEFAULT_BACKEND])]


def _end(env: Settings, execution_id: str, **fields: Any) -> None:
    event = sqs_event([out_event(execution_id, "finished", **fields)], env.out_queue_url)
    assert results_handler(event, lambda_context("results")) == {"batchItemFailures": []}  # type: ignore[arg-type]


def _status(user: str, execution_id: str) -> str:
    return call_api("GET", f"/executions/{execution_id}", user)[1]["status"]  # type: ignore[no-any-return]


@pytest.mark.slow
def test_one_users_150_maximal_submissions_do_not_delay_another_users_one(env: Settings) -> None:
    pipeline = make_pipeline(env, [MAXIMAL_STAGE] * 16)
    greedy, other = new_id(), new_id()
    answers = [submit(pipeline, greedy) for _ in range(150)]
    accepted = [body["executionId"] for status, body in answers if status == 202]
    refused = [body for status, body in answers if status != 202]
    assert len(accepted) == 100  # maxQueuedExecutions
    assert {body["code"] for body in refused} == {"QUOTA_EXCEEDED"}
    assert len(refused) == 50
    assert all(body["status"] == "QUEUED" for status, body in answers if status == 202)

    status, mine = submit(pipeline, other)
    assert status == 202
    # The other user's execution is behind the greedy user's admitted work only: 4 executions, not 100.
    queued = _in_queue(env)
    assert queued == [*accepted[:4], mine["executionId"]]

    # As the greedy user's executions end, the next ones enter the queue, in submission order.
    for finished in accepted[:4]:
        _end(env, finished, status="CANCELLED")
    assert _in_queue(env) == accepted[4:8]
    usage = call_api("GET", "/users/me/usage", greedy)[1]
    assert (usage["active"], usage["waiting"], usage["executions"]) == (4, 92, 4)
    assert call_api("GET", "/users/me/usage", other)[1]["active"] == 1


def test_a_burst_waits_behind_the_admitted_work_only(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as above at a tenth of the size (maxActive 2, maxQueued 10, 15 submissions): fast."""
    monkeypatch.setenv("MAX_QUEUED_EXECUTIONS", "10")
    monkeypatch.setenv("MAX_ACTIVE_EXECUTIONS", "2")
    get_settings.cache_clear()
    pipeline = make_pipeline(env, [MAXIMAL_STAGE] * 16)
    greedy, other = new_id(), new_id()
    answers = [submit(pipeline, greedy) for _ in range(15)]
    accepted = [body["executionId"] for status, body in answers if status == 202]
    assert [status for status, _ in answers] == [202] * 10 + [429] * 5
    mine = submit(pipeline, other)[1]["executionId"]
    assert _in_queue(env) == [*accepted[:2], mine]
    _end(env, accepted[1], status="CANCELLED")
    _end(env, mine, status="CANCELLED")
    assert _in_queue(env) == [accepted[2]]


def test_the_quota_answer_carries_retry_after(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_QUEUED_EXECUTIONS", "5")
    monkeypatch.setenv("MAX_ACTIVE_EXECUTIONS", "2")
    get_settings.cache_clear()
    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    for _ in range(5):
        assert submit(pipeline, user, {"variables": {"subject": "x"}})[0] == 202
    event = api_event("POST", f"/pipelines/{pipeline}/executions", user, body={"variables": {"subject": "x"}})
    response = executions_handler(event, lambda_context("executions"))  # type: ignore[arg-type]
    assert response["statusCode"] == 429
    assert json.loads(response["body"])["code"] == "QUOTA_EXCEEDED"
    assert int(response["multiValueHeaders"]["Retry-After"][0]) > 0
    assert len(_in_queue(env)) == 2
    items = call_api("GET", "/executions", user, query={"limit": "100"})[1]["items"]
    assert len(items) == 5  # the refused one left nothing behind


def test_the_daily_gpu_quota_refuses_until_midnight(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAILY_GPU_SECONDS", "10")
    get_settings.cache_clear()
    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    first = submit(pipeline, user, {"variables": {"subject": "x"}})[1]["executionId"]
    _end(env, first, status="FAILED", usage={"gpuSeconds": 12.5, "stages": [{"stage": 0, "seconds": 12.5}]})
    assert call_api("GET", f"/executions/{first}", user)[1]["usage"]["gpuSeconds"] == 12.5
    event = api_event("POST", f"/pipelines/{pipeline}/executions", user, body={"variables": {"subject": "x"}})
    response = executions_handler(event, lambda_context("executions"))  # type: ignore[arg-type]
    assert response["statusCode"] == 429
    retry_after = int(response["multiValueHeaders"]["Retry-After"][0])
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert abs(retry_after - (midnight - now).total_seconds()) < 60
    usage = call_api("GET", "/users/me/usage", user)[1]
    assert usage["gpuSeconds"] == 12.5
    assert usage["limits"] == {"maxActiveExecutions": 4, "maxQueuedExecutions": 100, "dailyGpuSeconds": 10.0}


def test_every_end_admits_the_next_cancel_delete_dlq(env: Settings) -> None:
    from functions.dlq.handler import lambda_handler as dlq_handler

    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    ids = [submit(pipeline, user, {"variables": {"subject": "x"}})[1]["executionId"] for _ in range(8)]
    assert _in_queue(env) == ids[:4]
    assert call_api("POST", f"/executions/{ids[0]}/cancel", user)[0] == 202  # admitted, queued
    assert call_api("DELETE", f"/executions/{ids[1]}", user)[0] == 204
    message = json.dumps({"executionId": ids[2], "resUri": "s3://b/request.json", "version": 1})
    dlq_handler(sqs_event([message], env.backend_dlqs[res.DEFAULT_BACKEND]), lambda_context("dlq"))  # type: ignore[arg-type]
    assert _in_queue(env) == ids[4:7]
    # Cancelling or deleting a waiting one admits nothing (nothing was freed) and it never enters the queue.
    assert call_api("POST", f"/executions/{ids[7]}/cancel", user)[1]["status"] == "CANCELLED"
    assert _in_queue(env) == []
    assert AdmissionRecord.get(user).waiting == 0


def test_concurrent_ends_and_duplicates_admit_exactly_once(env: Settings) -> None:
    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    ids = [submit(pipeline, user, {"variables": {"subject": "x"}})[1]["executionId"] for _ in range(10)]
    assert _in_queue(env) == ids[:4]
    finished = out_event(ids[0], "finished", status="CANCELLED")
    barrier = threading.Barrier(6)

    def race(index: int) -> None:
        barrier.wait()
        if index < 3:  # the same finished event, three times at once
            results_handler(sqs_event([finished], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
        else:  # and admitters with nothing to do but race for the slot
            admission.admit_next(user, execution_deps())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _in_queue(env) == [ids[4]]  # one slot freed, one admitted
    counter = AdmissionRecord.get(user)
    assert counter.active_ids == set(ids[1:5])
    assert counter.waiting == 5
    assert counter.day_executions == 1


def test_the_sweep_admits_what_a_lost_event_left_waiting_and_times_out_stale_waiters(env: Settings) -> None:
    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    ids = [submit(pipeline, user, {"variables": {"subject": "x"}})[1]["executionId"] for _ in range(6)]
    assert _in_queue(env) == ids[:4]
    # The first one ends, but the release that would admit the next is lost (the consumer died after its write).
    deps = execution_deps()
    assert deps.store.finish(ids[0], user, ExecutionStatus.CANCELLED, "2026-01-01T00:00:00.000Z")
    assert _in_queue(env) == []
    assert Sweeper().run_once()["admitted"] >= 1  # the same handler the schedule invokes
    mine = [i for i in _in_queue(env) if i in ids]  # (the shared tables may hold other tests' waiting ones)
    assert mine == [ids[4]]  # the leaked slot repaired (the set was full), the next admitted
    assert ExecutionRecord.get(ids[4]).admitted_at is not None

    later = datetime.now(UTC) + timedelta(seconds=deps.settings.execution_deadline_s + 60)
    report_later = sweep(deps, now=later)
    assert ids[5] in report_later.timed_out
    body = call_api("GET", f"/executions/{ids[5]}", user)[1]
    assert body["status"] == "FAILED"
    assert body["error"]["code"] == "TIMEOUT"
    assert body["startedAt"] is None
    assert AdmissionRecord.get(user).waiting == 0
    assert sweep(deps, now=later).timed_out == []  # nothing twice


def test_over_http_a_burst_waits_the_usage_shows_it_and_the_quota_says_when_to_retry(
    env: Settings, api: Any, new_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_QUEUED_EXECUTIONS", "4")
    monkeypatch.setenv("MAX_ACTIVE_EXECUTIONS", "2")
    get_settings.cache_clear()
    alice, bob = new_user(), new_user()
    pipeline = make_pipeline(env, [TXT2TXT])
    body = {"variables": {"subject": "x"}}
    answers = [api.post(f"/pipelines/{pipeline}/executions", json=body, headers=alice.headers) for _ in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 202, 429]
    assert answers[-1].json()["code"] == "QUOTA_EXCEEDED"
    assert int(answers[-1].headers["Retry-After"]) > 0
    usage = api.get("/users/me/usage", headers=alice.headers)
    assert usage.status_code == 200
    assert usage.json() | {"day": "-"} == {
        "day": "-",
        "executions": 0,
        "gpuSeconds": 0.0,
        "active": 2,
        "waiting": 2,
        "limits": {"maxActiveExecutions": 2, "maxQueuedExecutions": 4, "dailyGpuSeconds": None},
    }
    assert usage.json()["day"] == datetime.now(UTC).date().isoformat()
    waited = api.post(f"/pipelines/{pipeline}/executions", json=body, headers=bob.headers | {"Prefer": "wait=1"})
    assert waited.status_code == 202
    assert waited.headers["Preference-Applied"] == "wait=1"
    assert _in_queue(env) == [
        answers[0].json()["executionId"],
        answers[1].json()["executionId"],
        waited.json()["executionId"],
    ]
    assert api.get("/users/me/usage").status_code == 401


def test_concurrent_submissions_of_one_user_are_all_accepted_and_admitted_within_the_limit(env: Settings) -> None:
    pipeline, user = make_pipeline(env, [TXT2TXT]), new_id()
    barrier = threading.Barrier(10)
    answers: list[int] = []

    def go() -> None:
        barrier.wait()
        answers.append(submit(pipeline, user, {"variables": {"subject": "x"}})[0])

    threads = [threading.Thread(target=go) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 10  # conflicts on the user's admission item are retried, never a 503
    assert len(_in_queue(env)) == 4
    counter = AdmissionRecord.get(user)
    assert (len(counter.active_ids), counter.waiting) == (4, 6)
