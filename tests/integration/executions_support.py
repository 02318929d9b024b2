"""Helpers of the executions, results and DLQ tests: pipelines written straight to the stores, API Gateway and SQS
events built from the JSON files in tests/events, and the worker's side of the queue contract."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.consumers import lambda_context, queue_arn
from shared import resources as res
from shared.aws import client
from shared.messages import MESSAGE_VERSION, utc_now_iso
from shared.models import PipelineRecord, bind_models
from shared.settings import Settings, StackSettings, clear_cached_settings
from shared.stages import ResultManifest, ResultOutput, execution_prefix, manifest_key

EVENTS = Path(__file__).parent.parent / "events"


def new_id() -> str:
    return str(uuid.uuid4())


def make_pipeline(settings: Settings, stages: list[dict[str, Any]], author: str | None = None) -> str:
    """A pipeline as the pipelines API stores it: metadata in DynamoDB, the definition JSON in S3."""
    pipeline_id, created_at = new_id(), utc_now_iso()
    key = f"pipelines/{pipeline_id}/definition.json"
    definition = {"name": "test", "description": "", "stages": stages}
    client("s3", settings).put_object(Bucket=settings.pipelines_bucket, Key=key, Body=json.dumps(definition).encode())
    PipelineRecord(
        pipeline_id,
        name="test",
        author=author or new_id(),
        author_name="author",
        created_at=created_at,
        sort_key=f"{created_at}#{pipeline_id}",
        stage_count=len(stages),
        definition_key=key,
    ).save()
    return pipeline_id


TXT2IMG = {"type": "txt2img", "inline": True, "body": "a painting of {{subject}}", "parameters": {"steps": 4}}
TXT2TXT = {"type": "txt2txt", "inline": True, "body": "describe {{subject}}", "parameters": {}}
IMG2IMG = {"type": "img2img", "inline": True, "body": "restyle: {{previous}}", "parameters": {"strength": 0.5}}


def api_event(
    method: str,
    path: str,
    user_id: str | None,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (from tests/events) as the gateway sends it after the authorizer."""
    event = copy.deepcopy(json.loads((EVENTS / "apigw_execution_submit.json").read_text()))
    event.update(
        httpMethod=method,
        path=path,
        resource=resource or path,
        headers={"Content-Type": "application/json", **(headers or {})},
        queryStringParameters=query,
        pathParameters=path_parameters,
        body=body if body is None or isinstance(body, str) else json.dumps(body),
    )
    event["requestContext"].update(httpMethod=method, path=f"/dev{path}", resourcePath=event["resource"])
    event["requestContext"]["authorizer"] = {"userId": user_id, "principalId": user_id} if user_id else None
    return event


def call_api(method: str, path: str, user_id: str | None, **kwargs: Any) -> tuple[int, Any]:
    """Call the executions Lambda handler; returns (status, parsed JSON body or None)."""
    from functions.executions.handler import lambda_handler

    response = lambda_handler(api_event(method, path, user_id, **kwargs), lambda_context("executions"))  # type: ignore[arg-type]
    body = response.get("body")
    return response["statusCode"], json.loads(body) if body else None


def sqs_event(
    bodies: list[str], queue_url: str | None, region: str = "us-east-1", receive_count: int = 1
) -> dict[str, Any]:
    """An SQS Lambda event (from tests/events) with one record per body."""
    assert queue_url, "the settings name no out-queue"
    template = json.loads((EVENTS / "sqs_out_queue_finished.json").read_text())["Records"][0]
    records = []
    for body in bodies:
        record = copy.deepcopy(template)
        record.update(
            messageId=new_id(), receiptHandle=new_id(), body=body, eventSourceARN=queue_arn(queue_url, region)
        )
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        records.append(record)
    return {"Records": records}


def out_event(execution_id: str, event: str, **fields: Any) -> str:
    """An out-queue message body as the worker sends it."""
    body: dict[str, Any] = {
        "executionId": execution_id,
        "executionUri": None,
        "success": False,
        "version": MESSAGE_VERSION,
        "event": event,
        "at": utc_now_iso(),
    }
    body.update(fields)
    return json.dumps(body)


def progress(percent: int, stage: int = 1, stages: int = 1, step: int = 0, steps: int = 10) -> dict[str, int]:
    return {"stage": stage, "stages": stages, "step": step, "steps": steps, "percent": percent}


def write_results(settings: Settings, execution_id: str) -> str:
    """Write what a worker leaves behind on success (a PNG, a text output, result.json); returns result.json's URI."""
    s3, bucket, prefix = client("s3", settings), settings.results_bucket, execution_prefix(execution_id)
    image_key = f"{prefix}stage-1/0.png"
    s3.put_object(Bucket=bucket, Key=image_key, Body=b"\x89PNG\r\n\x1a\nfake", ContentType="image/png")
    manifest = ResultManifest(
        executionId=execution_id,
        outputs=[
            ResultOutput(stage=0, index=0, type="text", contentType="text/plain", text="a fox, described"),
            ResultOutput(stage=1, index=0, type="image", contentType="image/png", key=image_key),
        ],
        finishedAt=utc_now_iso(),
    )
    key = manifest_key(execution_id)
    s3.put_object(Bucket=bucket, Key=key, Body=manifest.to_json().encode(), ContentType="application/json")
    return f"s3://{bucket}/{key}"


def queue_pair(settings: Settings, name: str, visibility_s: int, max_receive_count: int) -> tuple[str, str]:
    """A queue and its DLQ with a redrive policy, as provisioned for the stack."""
    sqs = client("sqs", settings)
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    attributes = {"VisibilityTimeout": str(visibility_s), "RedrivePolicy": redrive}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url


def private_queues(
    stack_env: Settings, monkeypatch: pytest.MonkeyPatch, in_visibility_s: int = res.IN_QUEUE_VISIBILITY_S
) -> StackSettings:
    """Settings whose in-queue(s), DLQs and out-queue belong to this test alone.

    Submitted executions then never reach another test's worker, and a test may count and drain its queues.
    """
    tag = uuid.uuid4().hex[:10]
    in_url, in_dlq = queue_pair(stack_env, f"t-{tag}-in", in_visibility_s, 3)
    other_url, other_dlq = queue_pair(stack_env, f"t-{tag}-other-in", res.IN_QUEUE_VISIBILITY_S, 3)
    out_url, out_dlq = queue_pair(stack_env, f"t-{tag}-out", res.OUT_QUEUE_VISIBILITY_S, 5)
    monkeypatch.setenv(res.BACKEND_QUEUES_ENV_VAR, json.dumps({res.DEFAULT_BACKEND: in_url, OTHER_BACKEND: other_url}))
    monkeypatch.setenv(res.BACKEND_DLQS_ENV_VAR, json.dumps({res.DEFAULT_BACKEND: in_dlq, OTHER_BACKEND: other_dlq}))
    monkeypatch.setenv("IN_QUEUE_URL", in_url)
    monkeypatch.setenv("OUT_QUEUE_URL", out_url)
    monkeypatch.setenv("OUT_DLQ_URL", out_dlq)
    # Every progress event is written (the consumer's throttle is tested on its own).
    monkeypatch.setenv("PROGRESS_WRITE_INTERVAL_S", "0")
    clear_cached_settings()
    settings = StackSettings.from_env()
    bind_models(settings)
    return settings


OTHER_BACKEND = "other-fleet"


def submit(
    pipeline_id: str, user_id: str | None, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST /pipelines/{pipelineId}/executions through the Lambda handler."""
    return call_api("POST", f"/pipelines/{pipeline_id}/executions", user_id, body=body, headers=headers)


def received_bodies(settings: Settings, queue_url: str) -> list[dict[str, Any]]:
    """Every message now on a queue (received and deleted), as parsed JSON."""
    sqs, bodies = client("sqs", settings), list[dict[str, Any]]()
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages")
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
