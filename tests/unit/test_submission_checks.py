"""The use-site checks at submission (API.md, "Inputs that cost more than they say"), with in-memory S3."""

from __future__ import annotations

from typing import Any

import pytest

from functions.executions import logic
from functions.executions.schemas import SubmitExecution
from shared.errors import ValidationFailed
from shared.stages import StageDefinition
from tests.unit.execution_fakes import unit_settings
from tests.unit.pipeline_fakes import FakeBlobs, png


def _resolve(stages: list[StageDefinition], body: dict[str, Any], blobs: FakeBlobs) -> Any:
    deps = logic.ExecutionDeps(unit_settings(), None, blobs, None)  # type: ignore[arg-type]
    submission = logic.Submission("u1", "p1", SubmitExecution.model_validate(body))
    return logic.resolve_request("e1", submission, stages, deps)


def _locs(stages: list[StageDefinition], body: dict[str, Any], blobs: FakeBlobs) -> list[list[str]]:
    with pytest.raises(ValidationFailed) as exc:
        _resolve(stages, body, blobs)
    return [d["loc"] for d in exc.value.details or []]


def test_a_referenced_prompts_variables_are_required() -> None:
    blobs = FakeBlobs()
    stage = StageDefinition(
        type="txt2txt", inline=False, body=blobs.upload("author", b"about {{subject}}", "text/plain")
    )
    assert _locs([stage], {}, blobs) == [["body", "variables", "subject"]]
    assert _resolve([stage], {"variables": {"subject": "foxes"}}, blobs).stages[0].body_uri == stage.body


def test_a_referenced_prompt_replaced_by_a_larger_object_is_refused() -> None:
    blobs = FakeBlobs()
    uri = blobs.upload("author", b"short", "text/plain")
    bucket, key = uri[len("s3://") :].split("/", 1)
    blobs.objects[(bucket, key)] = (b"x" * 20_000, "text/plain")
    assert _locs([StageDefinition(type="txt2txt", inline=False, body=uri)], {}, blobs) == [["stages", "0", "body"]]


def test_a_prompt_over_16_kib_once_its_variables_are_filled_is_refused() -> None:
    stage = StageDefinition(type="txt2txt", body="x" * 16000 + "{{a}}")
    assert _locs([stage], {"variables": {"a": "y" * 385}}, FakeBlobs()) == [["body", "variables"]]
    _resolve([stage], {"variables": {"a": "y" * 384}}, FakeBlobs())


def test_previous_needs_a_text_stage_right_before() -> None:
    image = StageDefinition(type="txt2img", body="a fox")
    uses_previous = StageDefinition(type="txt2img", body="{{previous}} at night")
    assert _locs([image, uses_previous], {}, FakeBlobs()) == [["stages", "1", "body"]]
    _resolve([StageDefinition(type="txt2txt", body="a fox"), uses_previous], {}, FakeBlobs())


def test_img2img_after_a_text_stage_needs_variables_image() -> None:
    stages = [StageDefinition(type="txt2txt", body="a fox"), StageDefinition(type="img2img", body="restyle")]
    blobs = FakeBlobs()
    assert _locs(stages, {}, blobs) == [["body", "variables", "image"]]
    image = blobs.upload("u1", png(64, 64), "image/png")
    assert _resolve(stages, {"variables": {"image": image}}, blobs).image_uri == image
    after_an_image = [StageDefinition(type="txt2img", body="a fox"), stages[1]]
    _resolve(after_an_image, {}, blobs)
