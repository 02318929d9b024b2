"""Every tiny model family through the real worker on moto (API.md, "Models"): SDXL, SD3 and FLUX for txt2img
and img2img (sharing weights), an instruct LM with a system prompt, a LoRA on tiny-sd; `GET /models`; family rules
rejected with 422."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import httpx
import pytest
from PIL import Image

from gpu_worker.tiny_models import TINY_CHAT, TINY_FLUX, TINY_GPT2, TINY_LORA_NAME, TINY_SD, TINY_SD3, TINY_SDXL
from local.consumers import QueueConsumers
from shared.aws import client
from shared.settings import StackSettings, get_settings
from shared.stages import request_key
from tests.integration.executions_support import api_event, call_api, lambda_context, make_pipeline, new_id, submit
from tests.integration.test_worker import RunningWorker, consumers, env, start, wait_final  # noqa: F401

pytestmark = pytest.mark.timeout(300)


def _stage(stage_type: str, body: str, **parameters: Any) -> dict[str, Any]:
    return {"type": stage_type, "inline": True, "body": body, "parameters": parameters}


SDXL_CHAIN = [
    _stage("txt2txt", "describe a fox", model=TINY_CHAT, maxNewTokens=6, system="You write image prompts."),
    _stage("txt2img", "{{previous}}", model=TINY_SDXL, steps=2, width=64, height=96, negativePrompt="blurry"),
    _stage("img2img", "ink drawing", model=TINY_SDXL, steps=2, strength=0.5),
]
SD3_CHAIN = [
    _stage("txt2img", "a lighthouse", model=TINY_SD3, steps=2, width=64, height=64, negativePrompt="fog"),
    _stage("img2img", "at night", model=TINY_SD3, steps=2, strength=0.5),
]

FLUX_CHAIN = [
    _stage("txt2img", "a garden", model=TINY_FLUX, steps=2, width=64, height=96, guidanceScale=3.5),
    _stage("img2img", "in autumn", model=TINY_FLUX, steps=2, strength=0.5),
]


def _outputs(user: str, execution_id: str) -> list[tuple[int, str, tuple[int, int] | None]]:
    """(stage, type, image size) of each output, images fetched through their presigned URLs."""
    status, result = call_api("GET", f"/executions/{execution_id}/result", user)
    assert status == 200, result
    outputs = []
    for output in result["outputs"]:
        size = None
        if output["type"] == "image":
            with Image.open(io.BytesIO(httpx.get(output["url"], timeout=10).content)) as image:
                size = image.size
        else:
            assert output["text"].strip()
        outputs.append((output["stage"], output["type"], size))
    return outputs


@pytest.mark.slow
def test_an_execution_runs_on_each_tiny_family(env: StackSettings, consumers: QueueConsumers) -> None:  # noqa: F811
    user = new_id()
    sdxl = start(make_pipeline(env, SDXL_CHAIN), user)
    sd3 = start(make_pipeline(env, SD3_CHAIN), user)
    flux = start(make_pipeline(env, FLUX_CHAIN), user)
    with RunningWorker(env):
        finals = [wait_final(execution_id, 240) for execution_id in (sdxl, sd3, flux)]
    assert [done.status for done in finals] == ["SUCCEEDED"] * 3, [done.error for done in finals]
    assert _outputs(user, sdxl) == [(0, "text", None), (1, "image", (64, 96)), (2, "image", (64, 96))]
    assert _outputs(user, sd3) == [(0, "image", (64, 64)), (1, "image", (64, 64))]
    assert _outputs(user, flux) == [(0, "image", (64, 96)), (1, "image", (64, 96))]


def _image_bytes(user: str, execution_id: str) -> bytes:
    status, result = call_api("GET", f"/executions/{execution_id}/result", user)
    assert status == 200, result
    return httpx.get(result["outputs"][0]["url"], timeout=10).content


def test_a_lora_changes_the_image_and_is_switched_off_again(env: StackSettings, consumers: QueueConsumers) -> None:  # noqa: F811
    user = new_id()
    plain = _stage("txt2img", "a fox", model=TINY_SD, steps=2, width=64, height=64, seed=7)
    styled = {**plain, "parameters": {**plain["parameters"], "loras": [{"name": TINY_LORA_NAME, "scale": 1.0}]}}
    ids = [start(make_pipeline(env, [stage]), user) for stage in (plain, styled, plain)]
    with RunningWorker(env):
        finals = [wait_final(execution_id) for execution_id in ids]
    assert [done.status for done in finals] == ["SUCCEEDED"] * 3, [done.error for done in finals]
    first, with_lora, again = (_image_bytes(user, execution_id) for execution_id in ids)
    assert with_lora != first
    assert again == first  # same seed without the adapter: the adapter was switched off


def _models(user: str) -> tuple[int, Any]:
    from functions.pipelines.handler import lambda_handler

    response = lambda_handler(api_event("GET", "/models", user), lambda_context("pipelines"))  # type: ignore[arg-type]
    return response["statusCode"], json.loads(response["body"])


def test_get_models_lists_each_family_served(env: StackSettings) -> None:  # noqa: F811
    status, body = _models(new_id())
    assert status == 200, body
    families = {item["name"]: (item["family"], item["stageTypes"], item["default"]) for item in body["items"]}
    assert families[TINY_SD] == ("sd15", ["txt2img", "img2img"], True)
    assert families[TINY_SDXL] == ("sdxl", ["txt2img", "img2img"], False)
    assert families[TINY_SD3] == ("sd3", ["txt2img", "img2img"], False)
    assert families[TINY_FLUX] == ("flux", ["txt2img", "img2img"], False)
    assert families[TINY_GPT2] == ("causal-lm", ["txt2txt"], True)
    assert families[TINY_CHAT][0] == "causal-lm"
    assert {item["name"]: item["loras"] for item in body["items"]}[TINY_SD] == [TINY_LORA_NAME]


@pytest.mark.parametrize(
    ("stage", "parameter"),
    [
        (_stage("txt2img", "x", model=TINY_SD3, scheduler="DDIMScheduler"), "scheduler"),
        (_stage("txt2img", "x", model=TINY_FLUX, negativePrompt="blurry"), "negativePrompt"),
        (_stage("txt2txt", "x", model=TINY_GPT2, system="be brief"), "system"),
        (_stage("txt2txt", "x", model=TINY_SDXL), "model"),
        (_stage("txt2img", "x", model=TINY_SDXL, loras=[{"name": TINY_LORA_NAME, "scale": 1}]), "loras"),
    ],
)
def test_a_parameter_the_family_cannot_take_is_422_at_submission(
    env: StackSettings,  # noqa: F811
    stage: dict[str, Any],
    parameter: str,
) -> None:
    status, body = submit(make_pipeline(env, [stage]), new_id(), {})
    assert status == 422, body
    assert [problem["loc"][-1] for problem in body["details"]] == [parameter]


def test_a_models_defaults_fill_the_parameters_a_stage_leaves_out(
    env: StackSettings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = json.loads(os.environ["MODELS"])
    models[TINY_SDXL]["defaults"] = {"width": 128, "height": 128, "guidanceScale": 5.0}
    monkeypatch.setenv("MODELS", json.dumps(models))
    get_settings.cache_clear()
    pipeline = make_pipeline(env, [_stage("txt2img", "x", model=TINY_SDXL, height=64)])
    execution_id = start(pipeline, new_id())
    request = client("s3", env).get_object(Bucket=env.results_bucket, Key=request_key(execution_id))
    parameters = json.loads(request["Body"].read())["stages"][0]["parameters"]
    assert (parameters["width"], parameters["height"], parameters["guidanceScale"]) == (128, 64, 5.0)
