"""The example pipelines are valid for the API's stage schemas and use only the templates they document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.stages import MAX_STAGES, StageDefinition, Txt2ImgParameters, parse_parameters, template_variables

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = sorted(EXAMPLES.glob("*.json"))


def test_the_promised_examples_exist() -> None:
    names = {path.name for path in FILES}
    assert {"txt2img.json", "chain-txt2txt-txt2img.json", "chain-img2img.json", "portrait-variable.json"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_example_is_a_valid_pipeline_for_any_deployment(path: Path) -> None:
    definition = json.loads(path.read_text())
    assert set(definition) == {"name", "description", "stages"}
    assert 1 <= len(definition["stages"]) <= MAX_STAGES
    for index, raw in enumerate(definition["stages"]):
        stage = StageDefinition.model_validate(raw)
        parse_parameters(stage.type, stage.parameters)
        # No model named: the deployment's default runs it (tiny models locally, real ones in AWS).
        assert "model" not in stage.parameters
        # {{previous}} needs a previous stage; img2img needs a previous image or variables.image.
        assert index > 0 or "previous" not in template_variables(stage.body)
        if stage.type == "txt2img":
            params = parse_parameters(stage.type, stage.parameters)
            assert isinstance(params, Txt2ImgParameters)
            assert params.width * params.height <= 64 * 64
            assert params.steps <= 8


def test_chains_feed_each_stage_from_the_previous_one() -> None:
    chain = json.loads((EXAMPLES / "chain-txt2txt-txt2img.json").read_text())["stages"]
    assert [stage["type"] for stage in chain] == ["txt2txt", "txt2img"]
    assert "previous" in template_variables(chain[1]["body"])
    day_night = json.loads((EXAMPLES / "chain-img2img.json").read_text())["stages"]
    assert [stage["type"] for stage in day_night] == ["txt2img", "img2img"]
    portrait = json.loads((EXAMPLES / "portrait-variable.json").read_text())["stages"]
    assert template_variables(portrait[0]["body"]) == {"subject"}
