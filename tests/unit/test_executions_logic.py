"""Submission validation and request resolution, cursor checks and the API shapes (no network: fakes)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.executions import logic
from functions.executions.schemas import ExecutionResult, SubmitExecution, execution_view
from functions.pagination import check_cursor
from shared.errors import BadRequest, ValidationFailed
from shared.messages import ExecutionStatus
from shared.stages import StageDefinition
from tests.unit.execution_fakes import record, unit_settings
from tests.unit.pipeline_fakes import FakeBlobs, png

TXT2TXT = StageDefinition(type="txt2txt", body="describe {{subject}}", parameters={"maxNewTokens": 32})
TXT2IMG = StageDefinition(type="txt2img", body="{{previous}} in oil", parameters={"steps": 10})
IMG2IMG = StageDefinition(type="img2img", body="restyle", parameters={})


def deps(blobs: FakeBlobs | None = None, **settings: Any) -> logic.ExecutionDeps:
    return logic.ExecutionDeps(unit_settings(**settings), None, blobs or FakeBlobs(), None)  # type: ignore[arg-type]


def resolve(
    stages: list[StageDefinition], body: dict[str, Any], dependencies: logic.ExecutionDeps | None = None
) -> Any:
    submission = logic.Submission("u1", "p1", SubmitExecution.model_validate(body))
    return logic.resolve_request("e1", submission, stages, dependencies or deps())


def locs(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[list[str]]:
    return [d["loc"] for d in exc.value.details or []]


def test_resolution_merges_overrides_over_stage_parameters_and_fills_defaults() -> None:
    request = resolve([TXT2TXT, TXT2IMG], {"variables": {"subject": "fox"}, "parameters": {"1": {"width": 256}}})
    assert request.backend == "gpu-fleet"
    first, second = request.stages
    assert first.parameters["maxNewTokens"] == 32
    assert first.parameters["temperature"] == 0.7
    assert second.parameters["steps"] == 10
    assert second.parameters["width"] == 256
    assert second.body == "{{previous}} in oil"
    assert request.deadline > request.created_at


def test_a_stage_stored_in_s3_is_passed_by_uri() -> None:
    blobs = FakeBlobs()
    uri = blobs.upload("u1", b"a long prompt", "text/plain")
    stored = StageDefinition(type="txt2txt", inline=False, body=uri)
    (stage,) = resolve([stored], {}, deps(blobs)).stages
    assert stage.body is None
    assert stage.body_uri == uri


def test_every_problem_is_reported_in_one_422() -> None:
    with pytest.raises(ValidationFailed) as exc:
        resolve([TXT2TXT, TXT2IMG], {"backend": "tpu", "parameters": {"7": {}, "x": {}, "0": {"topP": 2}}})
    assert locs(exc) == [
        ["body", "backend"],
        ["body", "parameters", "7"],
        ["body", "parameters", "x"],
        ["body", "parameters", "0", "topP"],
        ["body", "variables", "subject"],
    ]


def test_previous_in_the_first_stage_is_rejected() -> None:
    with pytest.raises(ValidationFailed):
        resolve([TXT2IMG], {})


def test_models_are_checked_only_when_configured() -> None:
    body = {"variables": {"subject": "x"}, "parameters": {"0": {"model": "mystery"}}}
    assert resolve([TXT2TXT], body).stages[0].parameters["model"] == "mystery"
    configured = deps(models={"tiny": {"kind": "causal-lm", "source": "/m"}})
    with pytest.raises(ValidationFailed) as exc:
        resolve([TXT2TXT], body, configured)
    assert locs(exc) == [["body", "parameters", "0", "model"]]


@pytest.mark.parametrize(
    "variables",
    [{"1abc": "x"}, {"previous": "x"}, {"a" * 65: "x"}, {f"v{i}": "x" for i in range(65)}, {"big": "é" * 9000}],
)
def test_variable_limits(variables: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed):
        resolve([IMG2IMG.model_copy(update={"type": "txt2txt"})], {"variables": variables})


def test_img2img_first_needs_the_callers_existing_upload() -> None:
    blobs = FakeBlobs()
    own = blobs.upload("u1", png(64, 64), "image/png")
    with_upload = deps(blobs)
    assert resolve([IMG2IMG], {"variables": {"image": own}}, with_upload).image_uri == own
    others = blobs.upload("u2", png(64, 64), "image/png")
    for image in (None, others, own.replace("s3://uploads/", "s3://results/"), own.replace(".png", "0.png")):
        body = {"variables": {"image": image}} if image else {}
        with pytest.raises(ValidationFailed) as exc:
            resolve([IMG2IMG], body, with_upload)
        assert locs(exc) == [["body", "variables", "image"]]


def test_idempotency_keys_are_scoped_per_user_and_bounded() -> None:
    body = SubmitExecution()
    assert logic._scoped_idempotency_key(logic.Submission("u1", "p1", body, "k")) == "u1#k"
    assert logic._scoped_idempotency_key(logic.Submission("u1", "p1", body)) is None
    for bad in ("", "  ", "k" * 256):
        with pytest.raises(ValidationFailed):
            logic._scoped_idempotency_key(logic.Submission("u1", "p1", body, bad))


KEYS = {"executionId", "sortKey", "userId"}


def test_a_cursor_must_continue_the_same_listing() -> None:
    start = {"executionId": {"S": "e1"}, "userId": {"S": "u1"}, "sortKey": {"S": "t#e1"}}
    check_cursor(start, KEYS, "userId", "u1")
    check_cursor(None, KEYS, "userId", "u1")
    for bad in (
        {**start, "userId": {"S": "u2"}},
        {"executionId": {"S": "e1"}, "sortKey": {"S": "t#e1"}},
        {**start, "extra": {"S": "x"}},
        {**start, "sortKey": {"N": "1"}},
        ["not", "a", "dict"],
    ):
        with pytest.raises(BadRequest):
            check_cursor(bad, KEYS, "userId", "u1")  # type: ignore[arg-type]


def test_execution_view_has_every_api_field_and_no_storage_fields() -> None:
    view = execution_view(record(ExecutionStatus.QUEUED))
    assert set(view) == {
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
    assert view["startedAt"] is None
    assert view["cancelRequested"] is False
    assert view["usage"] is None  # until it is final


def test_a_succeeded_execution_shows_its_last_stage_at_100_percent() -> None:
    progress = {"stage": 1, "stages": 2, "step": 7, "steps": 25, "percent": 40}
    view = execution_view(record(ExecutionStatus.SUCCEEDED, progress=progress))
    assert view["progress"] == {"stage": 2, "stages": 2, "step": 25, "steps": 25, "percent": 100}
    assert view["usage"] == {"gpuSeconds": 0.0, "stages": []}


def test_result_outputs_omit_absent_text_and_url() -> None:
    result = ExecutionResult.model_validate(
        {
            "executionId": "e1",
            "expiresIn": 60,
            "outputs": [
                {"stage": 0, "index": 0, "type": "text", "contentType": "text/plain", "text": "hi"},
                {"stage": 1, "index": 0, "type": "image", "contentType": "image/png", "url": "https://x"},
            ],
        }
    )
    text, image = result.model_dump(by_alias=True)["outputs"]
    assert text == {"stage": 0, "index": 0, "type": "text", "contentType": "text/plain", "text": "hi"}
    assert image == {"stage": 1, "index": 0, "type": "image", "contentType": "image/png", "url": "https://x"}


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        (None, None),
        ("wait=5", 5),
        ("respond-async, wait=10", 10),
        ("WAIT = 3", 3),
        ("wait=100", 25),  # capped to API.md's 25
        ("wait=0", None),
        ("wait=-1", None),
        ("wait=soon", None),
        ("return=minimal", None),
    ],
)
def test_prefer_wait_is_parsed_as_rfc_7240_says(header: str | None, wait: int | None) -> None:
    from functions.executions.routes import preferred_wait

    assert preferred_wait(header) == wait


@pytest.mark.parametrize("seconds", [1, 2.5, 10, 25])
def test_a_wait_makes_at_most_ten_reads_and_lasts_its_time(seconds: float) -> None:
    pauses = logic.wait_intervals(seconds)
    assert len(pauses) <= 10
    assert sum(pauses) == pytest.approx(seconds)
    assert pauses == sorted(pauses) or pauses[-1] < pauses[-2]  # growing, but for the remainder


def test_a_wait_ends_at_the_first_read_that_finds_the_execution_final() -> None:
    reads = [record(ExecutionStatus.RUNNING), record(ExecutionStatus.SUCCEEDED)]

    class Store:
        def get(self, execution_id: str) -> Any:
            return reads.pop(0)

    slept: list[float] = []
    dependencies = logic.ExecutionDeps(unit_settings(), Store(), None, None)  # type: ignore[arg-type]
    final = logic.wait_until_final(record(ExecutionStatus.QUEUED), dependencies, 25, sleep=slept.append)
    assert final.status == "SUCCEEDED"
    assert slept == [0.25, 0.5]
