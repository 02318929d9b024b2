"""The queue wire contract, stage schemas and settings: the facts every component relies on."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared import resources as res
from shared.errors import PoisonMessage
from shared.messages import (
    ErrorInfo,
    ExecutionStatus,
    InQueueMessage,
    OutEvent,
    OutQueueMessage,
    Progress,
    parse_in_message,
    parse_out_message,
)
from shared.settings import Settings, WorkerSettings
from shared.stages import (
    ExecutionRequest,
    ResolvedStage,
    parameters_to_wire,
    parse_parameters,
    render_template,
    stage_types_document,
    template_variables,
)


def test_in_message_round_trips_in_the_seed_format_with_a_version() -> None:
    message = InQueueMessage(executionId="e-1", resUri="s3://bucket/executions/e-1/request.json")
    body = json.loads(message.to_json())
    assert body == {"executionId": "e-1", "resUri": "s3://bucket/executions/e-1/request.json", "version": 1}
    assert parse_in_message(message.to_json()) == message


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"executionId": "e"}',
        '{"executionId": "e", "resUri": "http://x/y", "version": 1}',
        '{"executionId": "e", "resUri": "s3://b/k", "version": 2}',
    ],
)
def test_malformed_in_messages_are_poison(body: str) -> None:
    with pytest.raises(PoisonMessage):
        parse_in_message(body)


def test_out_message_keeps_execution_uri_null_on_failure_and_derives_the_final_status() -> None:
    message = OutQueueMessage(
        executionId="e-1", event=OutEvent.FINISHED, success=False, error=ErrorInfo(code="BAD_INPUT", message="x")
    )
    body = json.loads(message.to_json())
    assert body["executionUri"] is None
    assert body["success"] is False
    assert body["status"] == "FAILED"
    assert body["at"].endswith("Z")
    assert parse_out_message(message.to_json()).status is ExecutionStatus.FAILED


def test_a_finished_event_cannot_carry_a_non_final_status() -> None:
    with pytest.raises(PoisonMessage):
        parse_out_message({"executionId": "e", "event": "finished", "status": "RUNNING", "version": 1})


def test_progress_event_carries_progress() -> None:
    progress = Progress(stage=1, stages=2, step=10, steps=25, percent=70)
    message = parse_out_message(OutQueueMessage(executionId="e", event=OutEvent.PROGRESS, progress=progress).to_json())
    assert message.progress == progress
    assert message.status is None


def test_parameters_fill_defaults_and_reject_unknown_keys_and_out_of_range_values() -> None:
    params = parameters_to_wire(parse_parameters("txt2img", {"steps": 4, "width": 64, "height": 64}))
    assert params["steps"] == 4
    assert params["guidanceScale"] == 7.5
    assert params["numImages"] == 1
    for bad in ({"steps": 0}, {"width": 65}, {"sampler": "x"}, {"numImages": 5}, {"guidanceScale": 31}):
        with pytest.raises(ValidationError):
            parse_parameters("txt2img", bad)
    with pytest.raises(ValidationError):
        parse_parameters("txt2txt", {"temperature": 2.5})
    with pytest.raises(ValidationError):
        parse_parameters("img2img", {"strength": 1.5})


def test_stage_types_document_lists_every_type_with_limits() -> None:
    doc = {entry["type"]: entry for entry in stage_types_document()}
    assert set(doc) == {"txt2txt", "txt2img", "img2img"}
    steps = doc["txt2img"]["parameters"]["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (1, 150, 25)
    assert "maxNewTokens" in doc["txt2txt"]["parameters"]["properties"]


def test_templates_render_variables_and_previous_and_report_missing_names() -> None:
    text = "a {{ style }} picture of {{previous}}"
    assert template_variables(text) == {"style", "previous"}
    assert render_template(text, {"style": "pastel"}, "a cat") == "a pastel picture of a cat"
    with pytest.raises(KeyError):
        render_template(text, {}, "a cat")
    with pytest.raises(KeyError):
        render_template("{{previous}}", {}, None)


def test_execution_request_round_trips_with_camel_case() -> None:
    request = ExecutionRequest(
        executionId="e",
        pipelineId="p",
        userId="u",
        backend="gpu-fleet",
        stages=[ResolvedStage(index=0, type="txt2txt", body="hi", parameters={"maxNewTokens": 4})],
        createdAt="2026-11-23T10:00:00Z",
        deadline="2026-11-23T11:00:00Z",
    )
    body = json.loads(request.to_json())
    assert body["executionId"] == "e"
    assert body["stages"][0]["parameters"] == {"maxNewTokens": 4}
    assert ExecutionRequest.model_validate(body) == request


def test_settings_default_resource_names_follow_the_stage_and_parse_json_values() -> None:
    settings = Settings.from_env(
        {
            "STAGE": "prod",
            "BACKEND_QUEUES": '{"gpu-fleet": "https://sqs/q"}',
            "MODELS": '{"sd": {"kind": "diffusers", "source": "/m/sd"}}',
            "IN_QUEUE_URL": "https://sqs/in",  # the worker's: the API's settings do not read it
            "AWS_REGION": "eu-west-1",
            "TRACING": "true",
            "OUT_DLQ_URL": "",  # empty counts as unset
        }
    )
    assert settings.executions_table == res.EXECUTIONS.physical_name("prod")
    assert settings.backends == ("gpu-fleet",)
    assert settings.models["sd"].source == "/m/sd"
    assert (settings.region, settings.tracing, settings.out_dlq_url) == ("eu-west-1", True, None)
    assert not hasattr(settings, "in_queue_url")


def test_the_workers_settings_are_apart_and_require_its_queues() -> None:
    queues = {"IN_QUEUE_URL": "https://sqs/in", "OUT_QUEUE_URL": "https://sqs/out"}
    worker = WorkerSettings.from_env(queues | {"STAGE": "prod", "MAX_BATCH_SIZE": "8", "JWT_SECRET": "ignored"})
    assert (worker.in_queue_url, worker.max_batch_size) == ("https://sqs/in", 8)
    assert worker.results_bucket == Settings.from_env({"STAGE": "prod"}).results_bucket
    assert not hasattr(worker, "jwt_secret")
    with pytest.raises(RuntimeError, match="in_queue_url"):
        WorkerSettings.from_env({"OUT_QUEUE_URL": "https://sqs/out"})
    with pytest.raises(RuntimeError, match="out_queue_url"):
        WorkerSettings.from_env({"IN_QUEUE_URL": "https://sqs/in", "OUT_QUEUE_URL": ""})


def test_settings_come_from_the_given_mapping_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_ISSUER", "from-the-process")
    assert Settings.from_env({}).jwt_issuer == "stagehub"
    assert Settings.from_env().jwt_issuer == "from-the-process"


def test_settings_reject_invalid_values_with_a_clear_error() -> None:
    queues = {"IN_QUEUE_URL": "https://sqs/in", "OUT_QUEUE_URL": "https://sqs/out"}
    with pytest.raises(RuntimeError, match="max_batch_size"):
        WorkerSettings.from_env(queues | {"MAX_BATCH_SIZE": "0"})
    with pytest.raises(RuntimeError, match="access_token_ttl_s"):
        Settings.from_env({"ACCESS_TOKEN_TTL_S": "5"})
    with pytest.raises(RuntimeError):
        Settings.from_env({"MODELS": '{"x": {"kind": "unknown", "source": "/"}}'})
