"""The executions API on moto, through its Lambda handler with API Gateway events (API.md, "Executions")."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from functions.executions import logic
from functions.executions.dependencies import execution_deps
from functions.executions.handler import lambda_handler as executions_handler
from functions.executions.schemas import SubmitExecution
from functions.results.handler import lambda_handler as results_handler
from local.consumers import lambda_context
from shared.aws import client
from shared.errors import ServiceUnavailable
from shared.models import AdmissionRecord, ExecutionRecord
from shared.queues import QueueUnavailable
from shared.settings import Settings
from shared.stages import ExecutionRequest, request_key
from shared.uploads import Declaration, upload_key
from tests.integration.executions_support import (
    OTHER_BACKEND,
    TXT2IMG,
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
    write_results,
)
from tests.unit.pipeline_fakes import png

EXECUTION_KEYS = {
    "executionId",
    "pipelineId",
    "userId",
    "backend",
    "status",
    "progress",
    "error",
    "createdAt",
    "startedAt",
    "finishedAt",
    "cancelRequested",
    "usage",
}


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return private_queues(stack_env, monkeypatch)


@pytest.fixture
def pipeline(env: Settings) -> str:
    return make_pipeline(env, [TXT2TXT, TXT2IMG])


def _queued(pipeline_id: str, user: str) -> dict[str, Any]:
    status, body = submit(pipeline_id, user, {"variables": {"subject": "a fox"}})
    assert status == 202, body
    return body  # type: ignore[no-any-return]


def _finish(env: Settings, execution_id: str, **fields: Any) -> None:
    """What the worker's finished event does to the record, through the results consumer."""
    event = sqs_event([out_event(execution_id, "finished", **fields)], env.out_queue_url)
    assert results_handler(event, lambda_context("results")) == {"batchItemFailures": []}  # type: ignore[arg-type]


# --- create ---


def test_create_answers_202_queued_and_writes_request_record_and_message(env: Settings, pipeline: str) -> None:
    user = new_id()
    status, body = submit(pipeline, user, {"variables": {"subject": "a fox"}, "parameters": {"1": {"steps": 7}}})

    assert status == 202
    assert set(body) == EXECUTION_KEYS
    assert body["status"] == "QUEUED"
    assert body["userId"] == user
    assert body["pipelineId"] == pipeline
    assert body["backend"] == "gpu-fleet"
    assert body["startedAt"] is None
    assert body["error"] is None
    execution_id = body["executionId"]
    bucket = env.results_bucket
    (message,) = received_bodies(env, env.backend_queues["gpu-fleet"])
    request_uri = f"s3://{bucket}/{request_key(execution_id)}"
    assert message == {"executionId": execution_id, "resUri": request_uri, "version": 1}
    raw = client("s3", env).get_object(Bucket=bucket, Key=request_key(execution_id))["Body"].read()
    request = ExecutionRequest.model_validate_json(raw)
    assert request.execution_id == execution_id
    assert request.user_id == user
    assert request.backend == "gpu-fleet"
    assert request.variables == {"subject": "a fox"}
    assert [s.type for s in request.stages] == ["txt2txt", "txt2img"]
    assert request.stages[0].body == "describe {{subject}}"
    assert request.stages[1].parameters["steps"] == 7  # the override
    assert request.stages[1].parameters["width"] == 512  # defaults filled
    assert request.deadline > request.created_at
    assert call_api("GET", f"/executions/{execution_id}", user) == (200, body)


def test_create_on_another_backend_goes_to_its_queue(env: Settings, pipeline: str) -> None:
    status, body = submit(pipeline, new_id(), {"variables": {"subject": "x"}, "backend": OTHER_BACKEND})
    assert status == 202
    assert body["backend"] == OTHER_BACKEND
    assert [m["executionId"] for m in received_bodies(env, env.backend_queues[OTHER_BACKEND])] == [body["executionId"]]
    assert received_bodies(env, env.backend_queues["gpu-fleet"]) == []


def test_create_with_no_body_works_when_nothing_is_needed(env: Settings) -> None:
    pipeline_id = make_pipeline(env, [{"type": "txt2txt", "inline": True, "body": "hello", "parameters": {}}])
    status, body = submit(pipeline_id, new_id())
    assert status == 202
    assert body["status"] == "QUEUED"


@pytest.mark.parametrize(
    ("request_body", "loc"),
    [
        ({"variables": {"subject": "x"}, "backend": "nope"}, ["body", "backend"]),
        ({"variables": {"subject": "x"}, "parameters": {"2": {}}}, ["body", "parameters", "2"]),
        ({"variables": {"subject": "x"}, "parameters": {"-1": {}}}, ["body", "parameters", "-1"]),
        ({"variables": {"subject": "x"}, "parameters": {"1": {"steps": 151}}}, ["body", "parameters", "1", "steps"]),
        ({"variables": {"subject": "x"}, "parameters": {"1": {"width": 100}}}, ["body", "parameters", "1", "width"]),
        ({"variables": {"subject": "x"}, "parameters": {"0": {"bogus": 1}}}, ["body", "parameters", "0", "bogus"]),
        ({"variables": {}}, ["body", "variables", "subject"]),
        ({"variables": {"subject": 3}}, None),
        ({"variables": {"subject": "x", "bad name": "y"}}, ["body", "variables", "bad name"]),
        ({"variables": {"subject": "x" * 16385}}, ["body", "variables", "subject"]),
        ({"variables": {"subject": "x"}, "unknown": 1}, None),
        ({"variables": {"subject": "x", "image": "https://example.com/a.png"}}, ["body", "variables", "image"]),
    ],
)
def test_invalid_submissions_answer_422_and_create_nothing(
    env: Settings, pipeline: str, request_body: dict[str, Any], loc: list[str] | None
) -> None:
    user = new_id()
    status, body = submit(pipeline, user, request_body)
    assert status == 422, body
    assert body["code"] == "VALIDATION_FAILED"
    if loc is not None:
        assert loc in [d["loc"] for d in body["details"]]
    assert call_api("GET", "/executions", user)[1]["items"] == []
    assert received_bodies(env, env.backend_queues["gpu-fleet"]) == []


def test_variables_image_must_be_an_existing_upload_of_the_caller(env: Settings) -> None:
    pipeline_id = make_pipeline(env, [{"type": "img2img", "inline": True, "body": "sketch", "parameters": {}}])
    user, other = new_id(), new_id()
    image = png(64, 64)
    own = upload_key(user, Declaration("image/png", len(image)))
    client("s3", env).put_object(Bucket=env.uploads_bucket, Key=own, Body=image, ContentType="image/png")
    someone_elses = upload_key(other, Declaration("image/png", len(image)))
    client("s3", env).put_object(Bucket=env.uploads_bucket, Key=someone_elses, Body=image, ContentType="image/png")

    assert submit(pipeline_id, user)[0] == 422  # img2img first needs an image
    missing = {"variables": {"image": f"s3://{env.uploads_bucket}/uploads/{user}/{new_id()}"}}
    assert submit(pipeline_id, user, missing)[0] == 422
    assert submit(pipeline_id, user, {"variables": {"image": f"s3://{env.uploads_bucket}/{someone_elses}"}})[0] == 422
    assert submit(pipeline_id, user, {"variables": {"image": f"s3://{env.results_bucket}/{own}"}})[0] == 422

    status, body = submit(pipeline_id, user, {"variables": {"image": f"s3://{env.uploads_bucket}/{own}"}})
    assert status == 202
    raw = client("s3", env).get_object(Bucket=env.results_bucket, Key=request_key(body["executionId"]))["Body"].read()
    assert ExecutionRequest.model_validate_json(raw).image_uri == f"s3://{env.uploads_bucket}/{own}"


def test_previous_is_allowed_after_the_first_stage(env: Settings) -> None:
    pipeline_id = make_pipeline(env, [TXT2TXT, TXT2IMG | {"body": "{{previous}} at dusk"}])
    assert submit(pipeline_id, new_id(), {"variables": {"subject": "x"}})[0] == 202


def test_model_must_be_configured_when_models_are(
    stack_env: Settings, monkeypatch: pytest.MonkeyPatch, pipeline: str
) -> None:
    monkeypatch.setenv("MODELS", json.dumps({"tiny-gpt2": {"kind": "causal-lm", "source": "/models/gpt2"}}))
    env = private_queues(stack_env, monkeypatch)
    good = {"variables": {"subject": "x"}, "parameters": {"0": {"model": "tiny-gpt2"}}}
    bad = {"variables": {"subject": "x"}, "parameters": {"0": {"model": "gpt-5"}}}
    assert submit(pipeline, new_id(), good)[0] == 202
    status, body = submit(pipeline, new_id(), bad)
    assert status == 422
    assert ["body", "parameters", "0", "model"] in [d["loc"] for d in body["details"]]
    assert env.models


@pytest.mark.parametrize("pipeline_id", [new_id(), "x" * 3000, "a%20b"])
def test_unknown_pipeline_is_404(env: Settings, pipeline_id: str) -> None:
    status, body = submit(pipeline_id, new_id(), {})
    assert status == 404
    assert body["code"] == "NOT_FOUND"


@pytest.mark.parametrize("execution_id", [new_id(), "y" * 3000, "not an id"])
def test_unknown_execution_is_404_everywhere(env: Settings, execution_id: str) -> None:
    user = new_id()
    for method, path in [("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", "")]:
        status, body = call_api(method, f"/executions/{execution_id}{path}", user)
        assert (status, body["code"]) == (404, "NOT_FOUND")
    assert call_api("GET", f"/pipelines/{'z' * 3000}/executions", user) == (200, {"items": [], "nextCursor": None})


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"'])
def test_malformed_body_is_400(env: Settings, pipeline: str, raw: str) -> None:
    status, body = submit(pipeline, new_id(), raw)
    assert status == 400
    assert body["code"] == "BAD_REQUEST"


def test_no_caller_is_401(env: Settings, pipeline: str) -> None:
    assert submit(pipeline, None, {"variables": {"subject": "x"}})[0] == 401


# --- idempotency ---


def test_idempotent_replay_returns_the_same_execution_and_creates_nothing(env: Settings, pipeline: str) -> None:
    user, key = new_id(), new_id()
    request_body = {"variables": {"subject": "x"}}
    first = submit(pipeline, user, request_body, headers={"Idempotency-Key": key})
    replay = submit(pipeline, user, request_body, headers={"idempotency-key": key})
    assert first[0] == replay[0] == 202
    assert replay[1]["executionId"] == first[1]["executionId"]
    assert len(call_api("GET", "/executions", user)[1]["items"]) == 1
    assert len(received_bodies(env, env.backend_queues["gpu-fleet"])) == 1
    # The key is per user: another user's same key is a new execution.
    other = submit(pipeline, new_id(), request_body, headers={"Idempotency-Key": key})
    assert other[0] == 202
    assert other[1]["executionId"] != first[1]["executionId"]


def test_concurrent_first_requests_with_one_key_make_one_execution(env: Settings, pipeline: str) -> None:
    user, key = new_id(), new_id()
    results: list[tuple[int, Any]] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        results.append(submit(pipeline, user, {"variables": {"subject": "x"}}, headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in results] == [202] * 4
    assert len({body["executionId"] for _, body in results}) == 1
    assert len(call_api("GET", "/executions", user)[1]["items"]) == 1
    assert len(received_bodies(env, env.backend_queues["gpu-fleet"])) == 1


def test_idempotency_key_longer_than_255_is_422(env: Settings, pipeline: str) -> None:
    status, _ = submit(pipeline, new_id(), {"variables": {"subject": "x"}}, headers={"Idempotency-Key": "k" * 256})
    assert status == 422


class _BrokenQueues:
    def send(self, queue_url: str, body: str) -> str:
        raise QueueUnavailable("SQS is down")


def test_a_failed_send_fails_the_record_answers_503_and_frees_the_key(env: Settings, pipeline: str) -> None:
    user, key = new_id(), new_id()
    deps = execution_deps()
    broken = logic.ExecutionDeps(env, deps.store, deps.blobs, _BrokenQueues())  # type: ignore[arg-type]
    submission = logic.Submission(user, pipeline, SubmitExecution(variables={"subject": "x"}), key)
    with pytest.raises(ServiceUnavailable):
        logic.submit_execution(submission, broken)
    (failed,) = call_api("GET", "/executions", user)[1]["items"]
    assert failed["status"] == "FAILED"
    assert failed["error"]["code"] == "ENQUEUE_FAILED"
    assert call_api("GET", "/executions", user, query={"status": "QUEUED"})[1]["items"] == []
    # The client retries with the same key: a new execution, really queued.
    status, body = submit(pipeline, user, {"variables": {"subject": "x"}}, headers={"Idempotency-Key": key})
    assert status == 202
    assert body["executionId"] != failed["executionId"]
    assert [m["executionId"] for m in received_bodies(env, env.backend_queues["gpu-fleet"])] == [body["executionId"]]


# --- lists ---


def test_lists_are_newest_first_paginated_and_filtered(env: Settings, pipeline: str) -> None:
    user = new_id()
    other_pipeline = make_pipeline(env, [TXT2TXT])
    ids = [_queued(pipeline, user)["executionId"] for _ in range(5)]
    other_id = _queued(other_pipeline, user)["executionId"]
    call_api("POST", f"/executions/{ids[1]}/cancel", user)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = call_api("GET", "/executions", user, query=query)
        assert status == 200
        assert len(page["items"]) <= 2
        seen += [item["executionId"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [other_id, *reversed(ids)]
    assert pages == 3

    status, by_pipeline = call_api("GET", f"/pipelines/{pipeline}/executions", user, query={"limit": "100"})
    assert status == 200
    assert [i["executionId"] for i in by_pipeline["items"]] == list(reversed(ids))
    assert by_pipeline["nextCursor"] is None
    cancelled = call_api("GET", "/executions", user, query={"status": "CANCELLED"})[1]
    assert [i["executionId"] for i in cancelled["items"]] == [ids[1]]
    queued = call_api("GET", "/executions", user, query={"status": "QUEUED"})[1]
    assert len(queued["items"]) == 5


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "101"}, 422),
        ({"limit": "ten"}, 422),
        ({"status": "DONE"}, 422),
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "eyJhIjogMX0="}, 400),  # {"a": 1}: well formed, never issued
    ],
)
def test_bad_list_queries(env: Settings, query: dict[str, str], status: int) -> None:
    code, body = call_api("GET", "/executions", new_id(), query=query)
    assert code == status
    assert "code" in body


def test_a_cursor_from_another_users_list_is_400(env: Settings, pipeline: str) -> None:
    owner = new_id()
    for _ in range(3):
        _queued(pipeline, owner)
    cursor = call_api("GET", "/executions", owner, query={"limit": "1"})[1]["nextCursor"]
    assert cursor
    assert call_api("GET", "/executions", new_id(), query={"cursor": cursor})[0] == 400


# --- cancel, delete, result ---


def test_cancel_queued_is_cancelled_at_once_without_start(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution = _queued(pipeline, user)
    status, body = call_api("POST", f"/executions/{execution['executionId']}/cancel", user)
    assert status == 202
    assert body["status"] == "CANCELLED"
    assert body["startedAt"] is None
    assert body["finishedAt"] is not None
    assert call_api("POST", f"/executions/{execution['executionId']}/cancel", user)[0] == 409


def test_cancel_running_requests_cancellation(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    started = sqs_event([out_event(execution_id, "started")], env.out_queue_url)
    results_handler(started, lambda_context("results"))  # type: ignore[arg-type]
    status, body = call_api("POST", f"/executions/{execution_id}/cancel", user)
    assert status == 202
    assert body["status"] == "RUNNING"
    assert body["cancelRequested"] is True
    _finish(env, execution_id, status="CANCELLED")
    assert call_api("GET", f"/executions/{execution_id}", user)[1]["status"] == "CANCELLED"
    assert call_api("POST", f"/executions/{execution_id}/cancel", user)[0] == 409


def test_result_is_409_until_succeeded_then_presigned_urls(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    status, body = call_api("GET", f"/executions/{execution_id}/result", user)
    assert status == 409
    assert body["code"] == "CONFLICT"

    result_uri = write_results(env, execution_id)
    _finish(env, execution_id, success=True, executionUri=result_uri)
    record = call_api("GET", f"/executions/{execution_id}", user)[1]
    assert record["status"] == "SUCCEEDED"
    assert record["progress"]["percent"] == 100

    status, result = call_api("GET", f"/executions/{execution_id}/result", user)
    assert status == 200
    assert result["executionId"] == execution_id
    assert result["expiresIn"] == env.presign_ttl_s
    text, image = result["outputs"]
    assert text == {"stage": 0, "index": 0, "type": "text", "contentType": "text/plain", "text": "a fox, described"}
    assert image["type"] == "image"
    assert image["contentType"] == "image/png"
    assert "text" not in image
    download = httpx.get(image["url"])
    assert download.status_code == 200
    assert download.content.startswith(b"\x89PNG")


def test_result_of_a_failed_execution_is_409(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    _finish(env, execution_id, error={"code": "OUT_OF_MEMORY", "message": "CUDA out of memory"})
    body = call_api("GET", f"/executions/{execution_id}", user)[1]
    assert body["status"] == "FAILED"
    assert body["error"] == {"code": "OUT_OF_MEMORY", "message": "CUDA out of memory"}
    assert call_api("GET", f"/executions/{execution_id}/result", user)[0] == 409


def test_delete_removes_record_and_results(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    _finish(env, execution_id, success=True, executionUri=write_results(env, execution_id))
    url = call_api("GET", f"/executions/{execution_id}/result", user)[1]["outputs"][1]["url"]
    assert httpx.get(url).status_code == 200

    assert call_api("DELETE", f"/executions/{execution_id}", user) == (204, None)
    for method, path in [("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", "")]:
        assert call_api(method, f"/executions/{execution_id}{path}", user)[0] == 404
    assert httpx.get(url).status_code == 404
    listed = client("s3", env).list_objects_v2(Bucket=env.results_bucket, Prefix=f"executions/{execution_id}/")
    assert listed.get("KeyCount", 0) == 0
    assert call_api("GET", "/executions", user)[1]["items"] == []


def test_delete_of_a_queued_execution_cancels_it_first(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    assert call_api("DELETE", f"/executions/{execution_id}", user)[0] == 204
    # A late worker event for the deleted execution never brings it back.
    _finish(env, execution_id, success=True, executionUri="s3://x/y")
    assert call_api("GET", f"/executions/{execution_id}", user)[0] == 404


# --- authorization matrix ---


def test_another_user_can_neither_see_nor_touch_an_execution(env: Settings, pipeline: str) -> None:
    owner, stranger = new_id(), new_id()
    execution_id = _queued(pipeline, owner)["executionId"]
    _finish(env, execution_id, success=True, executionUri=write_results(env, execution_id))

    for method, path in [
        ("GET", f"/executions/{execution_id}"),
        ("GET", f"/executions/{execution_id}/result"),
        ("POST", f"/executions/{execution_id}/cancel"),
        ("DELETE", f"/executions/{execution_id}"),
    ]:
        status, body = call_api(method, path, stranger)
        assert (status, body["code"]) == (404, "NOT_FOUND"), (method, path)
    assert call_api("GET", "/executions", stranger)[1]["items"] == []
    assert call_api("GET", "/executions", stranger, query={"status": "SUCCEEDED"})[1]["items"] == []
    assert call_api("GET", f"/pipelines/{pipeline}/executions", stranger)[1]["items"] == []
    # ... and the owner's execution is untouched.
    assert call_api("GET", f"/executions/{execution_id}/result", owner)[0] == 200


def test_submitted_metric_counts_creations_not_replays(
    env: Settings, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.executions import routes
    from shared import telemetry

    emitted: list[str] = []
    monkeypatch.setattr(routes.metrics, "add_metric", lambda name, **_: emitted.append(name))
    user, key = new_id(), new_id()
    for _ in range(2):
        submit(pipeline, user, {"variables": {"subject": "x"}}, headers={"Idempotency-Key": key})
    submit(pipeline, user, {"variables": {}})  # invalid: nothing created
    assert emitted == [telemetry.EXECUTIONS_SUBMITTED]


# --- hostile input: idempotency, delete racing completion, forged results ---


def test_an_idempotency_key_reused_with_another_pipeline_or_body_is_422(env: Settings, pipeline: str) -> None:
    user, key = new_id(), new_id()
    headers = {"Idempotency-Key": key}
    first = submit(pipeline, user, {"variables": {"subject": "x"}}, headers=headers)
    assert first[0] == 202
    other_pipeline = make_pipeline(env, [TXT2TXT])
    for pipeline_id, request_body in [
        (other_pipeline, {"variables": {"subject": "x"}}),
        (pipeline, {"variables": {"subject": "y"}}),
        (pipeline, {"variables": {"subject": "x"}, "parameters": {"1": {"steps": 3}}}),
    ]:
        status, body = submit(pipeline_id, user, request_body, headers=headers)
        assert (status, body["code"]) == (422, "IDEMPOTENCY_MISMATCH")
    assert submit(pipeline, user, {"variables": {"subject": "x"}}, headers=headers)[1] == first[1]
    assert len(received_bodies(env, env.backend_queues["gpu-fleet"])) == 1


def test_a_delete_racing_completion_leaves_nothing_behind(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    results_handler(sqs_event([out_event(execution_id, "started")], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    deps = execution_deps()
    # The DELETE has written its tombstone; the worker, not yet aware, finishes and writes its outputs.
    assert deps.store.tombstone(execution_id, "2026-01-01T00:00:00.000Z") is not None
    assert call_api("GET", f"/executions/{execution_id}", user)[0] == 404
    uri = write_results(env, execution_id)
    _finish(env, execution_id, success=True, executionUri=uri)
    assert ExecutionRecord.get(execution_id).status == "RUNNING"  # the event did not apply to a tombstone
    assert call_api("DELETE", f"/executions/{execution_id}", user)[0] == 404  # mid-delete: already going
    # The delete finishes (purge, then the record); a late finished event purges what the worker wrote after.
    deps.blobs.delete_prefix(env.results_bucket, f"executions/{execution_id}/")
    deps.store.delete(execution_id)
    write_results(env, execution_id)
    _finish(env, execution_id, success=True, executionUri=uri)
    listed = client("s3", env).list_objects_v2(Bucket=env.results_bucket, Prefix=f"executions/{execution_id}/")
    assert listed.get("KeyCount", 0) == 0
    with pytest.raises(ExecutionRecord.DoesNotExist):
        ExecutionRecord.get(execution_id)


def test_deleting_a_running_execution_frees_its_slot_and_tombstones_first(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    results_handler(sqs_event([out_event(execution_id, "started")], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    assert call_api("DELETE", f"/executions/{execution_id}", user) == (204, None)
    assert AdmissionRecord.get(user).active_ids is None  # the slot is free again
    _finish(env, execution_id, status="CANCELLED")  # the worker's late answer creates nothing
    with pytest.raises(ExecutionRecord.DoesNotExist):
        ExecutionRecord.get(execution_id)


def test_a_forged_result_uri_is_refused(env: Settings, pipeline: str) -> None:
    owner, victim_owner = new_id(), new_id()
    victim = _queued(pipeline, victim_owner)["executionId"]
    victim_uri = write_results(env, victim)
    _finish(env, victim, success=True, executionUri=victim_uri)
    forged = _queued(pipeline, owner)["executionId"]
    _finish(env, forged, success=True, executionUri=victim_uri)  # another execution's manifest
    assert call_api("GET", f"/executions/{forged}", owner)[1]["status"] == "QUEUED"
    assert call_api("GET", f"/executions/{forged}/result", owner)[0] == 409


# --- wait ---


def test_prefer_wait_returns_as_soon_as_the_execution_ends(env: Settings, pipeline: str) -> None:
    user = new_id()
    execution_id = _queued(pipeline, user)["executionId"]
    timer = threading.Timer(1.0, lambda: _finish(env, execution_id, status="FAILED"))
    timer.start()
    started = time.monotonic()
    event = api_event("GET", f"/executions/{execution_id}", user, headers={"Prefer": "wait=20"})
    response = executions_handler(event, lambda_context("executions"))  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    timer.join()
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "FAILED"
    assert response["multiValueHeaders"]["Preference-Applied"] == ["wait=20"]
    assert elapsed < 15  # well before the 20 s: at the read after the end


def test_prefer_wait_answers_after_n_seconds_otherwise_and_nothing_waits_without_it(
    env: Settings, pipeline: str
) -> None:
    user = new_id()
    started = time.monotonic()
    event = api_event(
        "POST",
        f"/pipelines/{pipeline}/executions",
        user,
        body={"variables": {"subject": "x"}},
        headers={"Prefer": "wait=2"},
    )
    response = executions_handler(event, lambda_context("executions"))  # type: ignore[arg-type]
    assert response["statusCode"] == 202
    assert 2 <= time.monotonic() - started < 10
    assert response["multiValueHeaders"]["Preference-Applied"] == ["wait=2"]
    execution_id = json.loads(response["body"])["executionId"]
    plain = executions_handler(api_event("GET", f"/executions/{execution_id}", user), lambda_context("executions"))  # type: ignore[arg-type]
    assert "Preference-Applied" not in (plain.get("multiValueHeaders") or {})


# --- backends ---


def test_backends_report_the_queue_and_an_estimated_wait(env: Settings, pipeline: str) -> None:
    user = new_id()
    for _ in range(3):
        _queued(pipeline, user)
    sqs = client("sqs", env)
    in_queue = env.backend_queues["gpu-fleet"]
    sqs.receive_message(QueueUrl=in_queue, MaxNumberOfMessages=1, VisibilityTimeout=300)  # one running
    queue_name = in_queue.rsplit("/", 1)[-1]
    client("cloudwatch", env).put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "NumberOfMessagesDeleted",
                "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
                "Value": 90.0,  # 90 done in the last 15 minutes: 0.1 a second
                "Unit": "Count",
            }
        ],
    )
    status, body = call_api("GET", "/backends", user)
    assert status == 200
    by_name = {item["name"]: item for item in body["items"]}
    assert set(by_name) == {"gpu-fleet", OTHER_BACKEND}
    assert by_name["gpu-fleet"] == {
        "name": "gpu-fleet",
        "queued": 2,
        "running": 1,
        "workers": 1,
        "estimatedWaitSeconds": 20,  # 2 queued at 0.1 a second
    }
    assert by_name[OTHER_BACKEND]["estimatedWaitSeconds"] == 0  # nothing queued
    assert call_api("GET", "/backends", None)[0] == 401
