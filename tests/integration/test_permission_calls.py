"""The other half of least privilege: the AWS calls each function's code really makes, recorded on the moto stack
while it serves a flow through its handler, are all in `infra.permissions` (which the template test holds the
roles to). A call the table lacks would be AccessDenied in AWS; it fails here first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.client import BaseClient

from infra import permissions
from infra.permissions import Grant
from local.consumers import lambda_context
from shared import resources as res
from shared.settings import Settings
from tests.integration.executions_support import (
    TXT2TXT,
    api_event,
    call_api,
    make_pipeline,
    new_id,
    out_event,
    private_queues,
    progress,
    sqs_event,
    submit,
)

Call = tuple[str, str, dict[str, Any]]  # (service, operation, parameters)
PASSWORD = "correct horse battery"
# DynamoDB transactions are authorized item by item; S3 operations by the action that covers them.
_TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_S3_ACTIONS = {  # operation -> (action, on the bucket itself rather than its objects)
    "HeadObject": ("GetObject", False),
    "GetObject": ("GetObject", False),
    "PutObject": ("PutObject", False),
    "DeleteObject": ("DeleteObject", False),
    "DeleteObjects": ("DeleteObject", False),
    "ListObjectsV2": ("ListBucket", True),
}


@pytest.fixture
def env(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return private_queues(stack_env, monkeypatch)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every botocore call of this process (pynamodb's included), in order; tests clear it after their setup."""
    recorded: list[Call] = []
    original = BaseClient._make_api_call

    def record(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        recorded.append((self.meta.service_model.service_name, operation, dict(params)))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return recorded


def _grants(calls: list[Call], settings: Settings) -> set[Grant]:
    tables = {getattr(settings, spec.env_var.lower()): spec.logical_id for spec in res.TABLES}
    buckets = {getattr(settings, spec.env_var.lower()): spec.logical_id for spec in res.BUCKETS}
    queues = {url: "in" for url in settings.backend_queues.values()}
    queues |= {url: "in-dlq" for url in settings.backend_dlqs.values()}
    queues |= {url: name for url, name in ((settings.out_queue_url, "out"), (settings.out_dlq_url, "out-dlq")) if url}
    grants: set[Grant] = set()
    for service, operation, params in calls:
        if service == "dynamodb" and operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                grants |= {
                    (f"dynamodb:{_TRANSACT_ITEM_ACTIONS[kind]}", f"table:{tables[body['TableName']]}")
                    for kind, body in item.items()
                }
        elif service == "dynamodb" and operation in {"BatchGetItem", "BatchWriteItem"}:
            grants |= {(f"dynamodb:{operation}", f"table:{tables[name]}") for name in params["RequestItems"]}
        elif service == "dynamodb":
            index = "/index/*" if params.get("IndexName") else ""
            grants.add((f"dynamodb:{operation}", f"table:{tables[params['TableName']]}{index}"))
        elif service == "s3":
            action, on_bucket = _S3_ACTIONS[operation]
            grants.add((f"s3:{action}", f"bucket:{buckets[params['Bucket']]}{'' if on_bucket else '/*'}"))
        elif service == "sqs":
            grants.add((f"sqs:{operation}", f"queue:{queues[params['QueueUrl']]}"))
        else:
            grants.add((f"{service}:{operation}", "?"))
    return grants


def _assert_declared(function: str, calls: list[Call], settings: Settings) -> None:
    made = _grants(calls, settings)
    assert made, f"the {function} flow made no AWS call: the recorder is not seeing them"
    assert made - permissions.declared_grants(function) == set()


def _handler_call(module: str, function: str, method: str, path: str, user_id: str | None, **kwargs: Any) -> Any:
    handler = __import__(module, fromlist=["lambda_handler"]).lambda_handler
    response = handler(api_event(method, path, user_id, **kwargs), lambda_context(function))
    assert response["statusCode"] < 500, response
    return json.loads(response["body"]) if response.get("body") else None


def _auth(method: str, path: str, user_id: str | None = None, **kwargs: Any) -> Any:
    return _handler_call("functions.auth.handler", "auth", method, path, user_id, **kwargs)


def _pipelines(method: str, path: str, user_id: str, **kwargs: Any) -> Any:
    return _handler_call("functions.pipelines.handler", "pipelines", method, path, user_id, **kwargs)


def _new_user() -> str:
    email = f"calls-{new_id()[:12]}@example.com"
    return str(_auth("POST", "/auth/register", body={"email": email, "password": PASSWORD})["userId"])


def test_auth_calls_are_declared(env: Settings, calls: list[Call]) -> None:
    email = f"calls-{new_id()[:12]}@example.com"
    user_id = _auth("POST", "/auth/register", body={"email": email, "password": PASSWORD})["userId"]
    _auth("POST", "/auth/login", body={"email": email, "password": "wrong password!"})
    pair = _auth("POST", "/auth/login", body={"email": email, "password": PASSWORD})
    _auth("POST", "/auth/refresh", body={"refreshToken": pair["refreshToken"]})
    _auth("POST", "/auth/refresh", body={"refreshToken": pair["refreshToken"]})  # reuse: revokes the family
    _auth("POST", "/auth/logout", body={"refreshToken": pair["refreshToken"]})
    _auth("GET", "/users/me", user_id)
    _assert_declared("auth", calls, env)


def test_pipelines_calls_are_declared(env: Settings, calls: list[Call]) -> None:
    author, rater = _new_user(), _new_user()
    calls.clear()
    body = {"name": "calls", "description": "", "stages": [TXT2TXT]}
    pipeline_id = _pipelines("POST", "/pipelines", author, body=body)["pipelineId"]
    path = {"pipelineId": pipeline_id}
    _pipelines("GET", "/pipelines", rater)
    _pipelines(
        "GET", "/users/me/pipelines", author, resource="/users/{userId}/pipelines", path_parameters={"userId": "me"}
    )
    _pipelines("GET", f"/pipelines/{pipeline_id}", rater, resource="/pipelines/{pipelineId}", path_parameters=path)
    rating = {"resource": "/pipelines/{pipelineId}/rating", "path_parameters": path}
    _pipelines("PUT", f"/pipelines/{pipeline_id}/rating", rater, body={"score": 4}, **rating)
    _pipelines("PUT", f"/pipelines/{pipeline_id}/rating", rater, body={"score": 5}, **rating)
    _pipelines("GET", f"/pipelines/{pipeline_id}/rating", rater, **rating)
    _pipelines("DELETE", f"/pipelines/{pipeline_id}", author, resource="/pipelines/{pipelineId}", path_parameters=path)
    _assert_declared("pipelines", calls, env)


def test_executions_calls_are_declared(env: Settings, calls: list[Call]) -> None:
    user, pipeline_id = new_id(), make_pipeline(env, [TXT2TXT])
    calls.clear()
    status, body = submit(pipeline_id, user, {"variables": {"subject": "x"}}, headers={"Idempotency-Key": new_id()})
    assert status == 202
    execution_id = body["executionId"]
    for method, path in [
        ("GET", f"/executions/{execution_id}"),
        ("GET", "/executions"),
        ("GET", f"/pipelines/{pipeline_id}/executions"),
        ("GET", f"/executions/{execution_id}/result"),
        ("POST", f"/executions/{execution_id}/cancel"),
        ("DELETE", f"/executions/{execution_id}"),
    ]:
        assert call_api(method, path, user)[0] < 500
    _assert_declared("executions", calls, env)


def test_queue_consumer_calls_are_declared(env: Settings, calls: list[Call]) -> None:
    from functions.dlq.handler import lambda_handler as dlq_handler
    from functions.results.handler import lambda_handler as results_handler

    pipeline_id = make_pipeline(env, [TXT2TXT])
    finished, failed = (submit(pipeline_id, new_id(), {"variables": {"subject": "x"}})[1]["executionId"] for _ in "ab")
    calls.clear()
    events = [out_event(finished, "started"), out_event(finished, "progress", progress=progress(50))]
    events.append(out_event(finished, "finished", success=False, error={"code": "STAGE_FAILED", "message": "x"}))
    results_handler(sqs_event(events, env.out_queue_url), lambda_context("results"))  # type: ignore[arg-type]
    _assert_declared("results", calls, env)
    calls.clear()
    dlq = env.backend_dlqs[res.DEFAULT_BACKEND]
    message = json.dumps({"executionId": failed, "resUri": "s3://x/request.json", "version": 1})
    dlq_handler(sqs_event([message], dlq, receive_count=3), lambda_context("dlq"))  # type: ignore[arg-type]
    _assert_declared("dlq", calls, env)
