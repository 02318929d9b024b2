"""Model families (shared.families): which parameters each supports, defaults of the model settings,
`GET /models`'s document, the worker's family-specific call arguments, and batch keys across families."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gpu_worker.families import call_arguments
from gpu_worker.stages import StageItem, batch_key
from shared.families import FAMILIES, family_of_pipeline_class, memory_warning, unsupported_parameters
from shared.settings import ModelSource
from shared.stages import (
    Txt2ImgParameters,
    Txt2TxtParameters,
    family_problems,
    models_document,
    with_model_defaults,
)

MODELS = {
    "sd": ModelSource(kind="diffusers", source="/m/sd"),
    "xl": ModelSource(kind="diffusers", family="sdxl", source="/m/xl", loras={"ink": "/l/ink", "clay": "/l/clay"}),
    "sd3": ModelSource(kind="diffusers", family="sd3", source="/m/sd3"),
    "flux": ModelSource(kind="diffusers", family="flux", source="/m/flux"),
    "lm": ModelSource(kind="causal-lm", source="/m/lm"),
    "chat": ModelSource(kind="causal-lm", chat=True, source="/m/chat"),
}
DEFAULTS = {"txt2img": "sd", "img2img": "sd", "txt2txt": "lm"}


def test_a_family_defaults_from_the_kind_and_must_match_it() -> None:
    assert MODELS["sd"].family == "sd15"
    assert MODELS["lm"].family == "causal-lm"
    with pytest.raises(ValidationError, match="not a causal-lm family"):
        ModelSource(kind="causal-lm", family="sdxl", source="/m")
    with pytest.raises(ValidationError, match="unknown model family"):
        ModelSource(kind="diffusers", family="sd9", source="/m")


def test_each_pipeline_class_belongs_to_one_family() -> None:
    assert family_of_pipeline_class("StableDiffusionXLPipeline") == "sdxl"
    assert family_of_pipeline_class("StableDiffusion3Img2ImgPipeline") == "sd3"
    assert family_of_pipeline_class("FluxPipeline") == "flux"
    assert family_of_pipeline_class("KandinskyPipeline") is None
    classes = [name for family in FAMILIES.values() for name in family.pipelines.values()]
    assert len(classes) == len(set(classes))


def test_flux_takes_no_negative_prompt_and_flow_matching_families_no_scheduler() -> None:
    asked = {"negativePrompt": "blurry", "scheduler": "DDIMScheduler", "steps": 4}
    assert unsupported_parameters("flux", "txt2img", asked) == ["negativePrompt", "scheduler"]
    assert unsupported_parameters("sd3", "img2img", asked) == ["scheduler"]
    assert unsupported_parameters("sdxl", "txt2img", asked) == []
    assert unsupported_parameters("flux", "txt2img", {"negativePrompt": None}) == []  # unset is fine


def test_family_problems_name_the_parameter_and_the_model() -> None:
    problems = family_problems("txt2img", {"model": "flux", "negativePrompt": "x"}, MODELS, DEFAULTS)
    assert problems == [("negativePrompt", "model 'flux' (flux) does not support negativePrompt")]
    assert family_problems("txt2img", {"negativePrompt": "x"}, MODELS, DEFAULTS) == []  # the default is sd15
    assert family_problems("txt2img", {"model": "elsewhere"}, MODELS, DEFAULTS) == []  # unknown: the caller's


def test_a_model_of_another_stage_type_is_a_problem_on_model() -> None:
    assert family_problems("txt2txt", {"model": "xl"}, MODELS, DEFAULTS) == [
        ("model", "model 'xl' (sdxl) does not serve txt2txt stages")
    ]
    assert family_problems("img2img", {"model": "lm"}, MODELS, DEFAULTS)[0][0] == "model"


def test_a_system_prompt_needs_a_chat_model() -> None:
    assert family_problems("txt2txt", {"model": "chat", "system": "be brief"}, MODELS, DEFAULTS) == []
    assert family_problems("txt2txt", {"system": "be brief"}, MODELS, DEFAULTS)[0][0] == "system"


def test_a_system_prompt_is_at_most_4_kib_of_utf8() -> None:
    Txt2TxtParameters.model_validate({"system": "a" * 4096})
    with pytest.raises(ValidationError):
        Txt2TxtParameters.model_validate({"system": "é" * 2049})  # 2049 characters, 4098 bytes


def test_the_models_document_lists_families_stage_types_defaults_and_loras() -> None:
    document = {item["name"]: item for item in models_document(MODELS, DEFAULTS)}
    assert list(document) == sorted(MODELS)
    assert document["xl"] == {
        "name": "xl",
        "kind": "diffusers",
        "family": "sdxl",
        "stageTypes": ["txt2img", "img2img"],
        "default": False,
        "loras": ["clay", "ink"],
        "defaults": {},
    }
    assert document["sd"]["default"]
    assert document["lm"]["default"]
    assert document["chat"]["stageTypes"] == ["txt2txt"]


def test_sdxl_calls_are_size_conditioned_on_the_requested_size() -> None:
    params = {"width": 64, "height": 96}
    assert call_arguments("sdxl", "txt2img", params) == {
        "original_size": (96, 64),
        "target_size": (96, 64),
        "crops_coords_top_left": (0, 0),
    }
    assert call_arguments("sd15", "txt2img", params) == {}
    assert call_arguments("sd3", "txt2img", params) == {}


def test_batch_keys_keep_models_of_different_families_apart() -> None:
    item = StageItem(prompt="p", params={"width": 64, "height": 64, "steps": 2, "guidanceScale": 7.5})
    assert batch_key("txt2img", "xl", item) != batch_key("txt2img", "sd3", item)
    assert batch_key("txt2img", "xl", item) == batch_key("txt2img", "xl", StageItem("q", dict(item.params)))


def test_flow_matching_img2img_keeps_the_input_size() -> None:
    assert call_arguments("sd3", "img2img", {"steps": 2}, (64, 96)) == {"width": 64, "height": 96}
    assert call_arguments("sd15", "img2img", {"steps": 2}, (64, 96)) == {}  # SD takes the input's size itself


def test_batch_keys_separate_adapter_sets_but_not_their_order() -> None:
    params = {"width": 64, "height": 64, "steps": 2, "guidanceScale": 7.5}
    ink = [{"name": "ink", "scale": 0.8}, {"name": "clay", "scale": 1.0}]

    def key(loras: Any) -> Any:
        return batch_key("txt2img", "xl", StageItem("p", {**params, "loras": loras}))

    assert key(ink) == key(list(reversed(ink)))
    assert key(ink) != key([{"name": "ink", "scale": 0.5}, {"name": "clay", "scale": 1.0}])
    assert key(ink) != key(None)
    assert key(None) == key([])


def test_loras_must_be_the_models_own_distinct_and_at_most_four() -> None:
    assert family_problems("txt2img", {"model": "xl", "loras": [{"name": "ink", "scale": 1}]}, MODELS, DEFAULTS) == []
    problems = family_problems("img2img", {"model": "sd", "loras": [{"name": "ink", "scale": 1}]}, MODELS, DEFAULTS)
    assert problems == [("loras", "model 'sd' has no LoRA ink (it has: none)")]
    with pytest.raises(ValidationError, match="at most once"):
        Txt2ImgParameters.model_validate({"loras": [{"name": "ink"}, {"name": "ink", "scale": 0.5}]})
    with pytest.raises(ValidationError):
        Txt2ImgParameters.model_validate({"loras": [{"name": f"l{i}"} for i in range(5)]})
    with pytest.raises(ValidationError):
        Txt2ImgParameters.model_validate({"loras": [{"name": "ink", "scale": 2.5}]})


def test_a_device_with_less_free_memory_than_the_family_needs_is_warned_about() -> None:
    assert memory_warning("flux", 24 * 2**30) == (
        "24.0 GiB free on the device; a flux model typically needs about 33 GiB"
    )
    assert memory_warning("sd15", 24 * 2**30) is None
    assert memory_warning("causal-lm", 0) is None  # no hint: a causal LM's size varies too much


def test_a_models_defaults_fill_what_a_stage_does_not_set() -> None:
    flux = ModelSource(kind="diffusers", family="flux", source="/m", defaults={"guidanceScale": 3.5, "width": 1024})
    models = {**MODELS, "flux": flux}
    asked = {"model": "flux", "width": 512}
    assert with_model_defaults("txt2img", asked, models, DEFAULTS) == {"guidanceScale": 3.5, "width": 512, **asked}
    assert with_model_defaults("img2img", asked, models, DEFAULTS) == {"guidanceScale": 3.5, **asked}  # no width
    assert with_model_defaults("txt2img", {"width": 64}, models, DEFAULTS) == {"width": 64}  # sd: no defaults
    assert with_model_defaults("txt2img", {"model": ["x"]}, models, DEFAULTS) == {"model": ["x"]}  # left to 422


def test_a_models_defaults_must_be_valid_parameters_of_its_family() -> None:
    with pytest.raises(ValidationError, match="not parameters of txt2img/img2img"):
        ModelSource(kind="diffusers", source="/m", defaults={"maxNewTokens": 8})
    with pytest.raises(ValidationError, match="not parameters"):
        ModelSource(kind="diffusers", source="/m", defaults={"model": "other"})
    with pytest.raises(ValidationError, match="defaults for txt2img"):
        ModelSource(kind="diffusers", source="/m", defaults={"width": 1004})  # not a multiple of 8
    assert ModelSource(kind="causal-lm", source="/m", defaults={"temperature": 0.2}).defaults == {"temperature": 0.2}
