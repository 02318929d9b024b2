"""Who may touch what, over HTTP on the local gateway: a second user can neither see nor change the first
user's executions, results and uploads, nor delete their pipelines (API.md: `404` for what the caller may not
see, `403` for a pipeline only its author may delete, `422` for an upload that is not the caller's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from functions.results.handler import lambda_handler as results_handler
from local.consumers import lambda_context
from shared.settings import Settings
from tests.integration.executions_support import out_event, private_queues, sqs_event, write_results

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser


@dataclass(frozen=True)
class Owned:
    """What the owner has: a pipeline, an uploaded prompt, a succeeded and a queued execution."""

    owner: TestUser
    stranger: TestUser
    pipeline_id: str
    upload_uri: str
    succeeded_id: str
    queued_id: str


@pytest.fixture
def owned(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> Owned:
    env = private_queues(stack_env, monkeypatch)
    owner, stranger = new_user("owner"), new_user("stranger")
    stage = {"type": "txt2txt", "inline": True, "body": "a fox", "parameters": {}}
    created = api.post("/pipelines", json={"name": "mine", "stages": [stage]}, headers=owner.headers)
    assert created.status_code == 201, created.text
    pipeline_id = created.json()["pipelineId"]

    upload = api.post("/uploads", json={"contentType": "image/png", "sizeBytes": 4}, headers=owner.headers).json()
    assert httpx.put(upload["uploadUrl"], content=b"\x89PNG", headers={"Content-Type": "image/png"}).status_code == 200

    def run() -> str:
        response = api.post(f"/pipelines/{pipeline_id}/executions", json={}, headers=owner.headers)
        assert response.status_code == 202, response.text
        return response.json()["executionId"]  # type: ignore[no-any-return]

    succeeded_id, queued_id = run(), run()
    finished = out_event(succeeded_id, "finished", success=True, executionUri=write_results(env, succeeded_id))
    outcome = results_handler(sqs_event([finished], env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    assert outcome == {"batchItemFailures": []}
    assert api.get(f"/executions/{succeeded_id}/result", headers=owner.headers).status_code == 200
    return Owned(owner, stranger, pipeline_id, upload["uri"], succeeded_id, queued_id)


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str  # formatted with the Owned fields
    status: int
    code: str
    body: dict[str, Any] | None = None  # formatted likewise (string values only)


DENIED = {
    "read-execution": Attempt("GET", "/executions/{succeeded_id}", 404, "NOT_FOUND"),
    "read-queued-execution": Attempt("GET", "/executions/{queued_id}", 404, "NOT_FOUND"),
    "read-result": Attempt("GET", "/executions/{succeeded_id}/result", 404, "NOT_FOUND"),
    "cancel-queued": Attempt("POST", "/executions/{queued_id}/cancel", 404, "NOT_FOUND"),
    "cancel-final": Attempt("POST", "/executions/{succeeded_id}/cancel", 404, "NOT_FOUND"),
    "delete-queued": Attempt("DELETE", "/executions/{queued_id}", 404, "NOT_FOUND"),
    "delete-succeeded": Attempt("DELETE", "/executions/{succeeded_id}", 404, "NOT_FOUND"),
    "delete-pipeline": Attempt("DELETE", "/pipelines/{pipeline_id}", 403, "FORBIDDEN"),
    "upload-as-stage-body": Attempt(
        "POST",
        "/pipelines",
        422,
        "VALIDATION_FAILED",
        {"name": "stolen", "stages": [{"type": "txt2txt", "inline": False, "body": "{upload_uri}"}]},
    ),
    "upload-as-image-variable": Attempt(
        "POST",
        "/pipelines/{pipeline_id}/executions",
        422,
        "VALIDATION_FAILED",
        {"variables": {"image": "{upload_uri}"}},
    ),
}


def _format(value: Any, owned: Owned) -> Any:
    if isinstance(value, str):
        return value.format(**vars(owned))
    if isinstance(value, dict):
        return {k: _format(v, owned) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, owned) for v in value]
    return value


def _assert_untouched(api: httpx.Client, owned: Owned) -> None:
    """The owner still has everything as it was."""
    headers = owned.owner.headers
    succeeded = api.get(f"/executions/{owned.succeeded_id}", headers=headers)
    assert (succeeded.status_code, succeeded.json()["status"]) == (200, "SUCCEEDED")
    queued = api.get(f"/executions/{owned.queued_id}", headers=headers).json()
    assert (queued["status"], queued["cancelRequested"]) == ("QUEUED", False)
    result = api.get(f"/executions/{owned.succeeded_id}/result", headers=headers)
    assert result.status_code == 200
    assert httpx.get(result.json()["outputs"][1]["url"]).status_code == 200
    assert api.get(f"/pipelines/{owned.pipeline_id}", headers=headers).status_code == 200
    listed = api.get("/executions", headers=headers).json()["items"]
    assert {item["executionId"] for item in listed} == {owned.succeeded_id, owned.queued_id}


@pytest.mark.parametrize("name", DENIED)
def test_a_stranger_is_denied(api: httpx.Client, owned: Owned, name: str) -> None:
    attempt = DENIED[name]
    body = _format(attempt.body, owned) if attempt.body is not None else None
    response = api.request(attempt.method, _format(attempt.path, owned), json=body, headers=owned.stranger.headers)
    assert response.status_code == attempt.status, response.text
    assert response.json()["code"] == attempt.code
    _assert_untouched(api, owned)


LISTS = {
    "all-executions": "/executions",
    "succeeded-executions": "/executions?status=SUCCEEDED",
    "queued-executions": "/executions?status=QUEUED",
    "pipeline-executions": "/pipelines/{pipeline_id}/executions",
}


@pytest.mark.parametrize("name", LISTS)
def test_a_stranger_never_lists_the_owners_executions(api: httpx.Client, owned: Owned, name: str) -> None:
    path = _format(LISTS[name], owned)
    response = api.get(path, headers=owned.stranger.headers)
    assert response.status_code == 200
    assert response.json() == {"items": [], "nextCursor": None}
    # The owner's view of the same list is the control.
    owners = {item["executionId"] for item in api.get(path, headers=owned.owner.headers).json()["items"]}
    assert owners & {owned.succeeded_id, owned.queued_id}


def test_what_every_user_may_do_with_someone_elses_pipeline(api: httpx.Client, owned: Owned) -> None:
    """The other side of the matrix (API.md): any user may read, rate and run any pipeline."""
    headers = owned.stranger.headers
    assert api.get(f"/pipelines/{owned.pipeline_id}", headers=headers).status_code == 200
    assert api.put(f"/pipelines/{owned.pipeline_id}/rating", json={"score": 5}, headers=headers).status_code == 200
    run = api.post(f"/pipelines/{owned.pipeline_id}/executions", json={}, headers=headers)
    assert run.status_code == 202
    assert run.json()["userId"] == owned.stranger.user_id
    # The stranger's own execution is theirs alone.
    assert api.get(f"/executions/{run.json()['executionId']}", headers=owned.owner.headers).status_code == 404
    _assert_untouched(api, owned)
