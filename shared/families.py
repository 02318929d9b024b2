"""Model families: what each kind of checkpoint can do, in one table the API and the worker share.

A family decides which stage types a model serves, which diffusers pipeline classes load it (names only:
this module imports neither torch nor diffusers, so the Lambda functions can validate with it), which stage
parameters it does not support (a pipeline using one is rejected with 422 at validation, not failed at run
time), and a rough memory hint (the worker warns when a GPU has less free). Batch keys need nothing per
family: they include the model (hence its family) and the LoRA set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_STAGE_TYPES = ("txt2img", "img2img")
TEXT_STAGE_TYPES = ("txt2txt",)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # ModelSource.kind: "diffusers" | "causal-lm"
    stage_types: tuple[str, ...]
    # diffusers pipeline class (model_index.json's `_class_name`) per stage type; empty for causal LMs
    pipelines: dict[str, str] = field(default_factory=dict)
    # camelCase stage parameters this family cannot honour
    unsupported: frozenset[str] = frozenset()
    # fp16/bf16 weights and activations at the family's native size, batch 1 (GiB, rough)
    memory_gib: float = 0.0
    native_size: int = 0  # the width and height it was trained at (the fast profile warms it up there)
    description: str = ""


_SD_PARAMETERS_NOT_IN_FLOW_MATCHING = frozenset({"scheduler"})  # flow-matching families have one scheduler family

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="sd15",
            kind="diffusers",
            stage_types=IMAGE_STAGE_TYPES,
            pipelines={"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline"},
            memory_gib=3.5,
            native_size=512,
            description="Stable Diffusion 1.x/2.x (UNet, one CLIP text encoder); 512² native",
        ),
        Family(
            name="sdxl",
            kind="diffusers",
            stage_types=IMAGE_STAGE_TYPES,
            pipelines={"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline"},
            memory_gib=10.0,
            native_size=1024,
            description="Stable Diffusion XL (UNet, two CLIP text encoders, size conditioning); 1024² native",
        ),
        Family(
            name="sd3",
            kind="diffusers",
            stage_types=IMAGE_STAGE_TYPES,
            pipelines={"txt2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline"},
            unsupported=_SD_PARAMETERS_NOT_IN_FLOW_MATCHING,
            memory_gib=18.0,
            native_size=1024,
            description="Stable Diffusion 3/3.5 (MMDiT transformer, flow matching); 1024² native",
        ),
        Family(
            name="flux",
            kind="diffusers",
            stage_types=IMAGE_STAGE_TYPES,
            pipelines={"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline"},
            unsupported=_SD_PARAMETERS_NOT_IN_FLOW_MATCHING | {"negativePrompt"},
            memory_gib=33.0,
            native_size=1024,
            description="FLUX.1 (transformer, guidance-distilled: no negative prompt); 1024² native",
        ),
        Family(
            name="causal-lm",
            kind="causal-lm",
            stage_types=TEXT_STAGE_TYPES,
            description="A transformers causal language model (instruct models: chat template, `system`)",
        ),
    )
}

DEFAULT_FAMILY_OF_KIND = {"diffusers": "sd15", "causal-lm": "causal-lm"}


def family_named(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; one of {sorted(FAMILIES)}") from None


def family_of_pipeline_class(class_name: str) -> str | None:
    """The family whose txt2img or img2img pipeline is `class_name` (a model_index.json `_class_name`)."""
    for family in FAMILIES.values():
        if class_name in family.pipelines.values():
            return family.name
    return None


def unsupported_parameters(family: str, stage_type: str, parameters: dict[str, Any]) -> list[str]:
    """The camelCase parameters set (not None) in `parameters` that `family` does not support, sorted."""
    rules = family_named(family)
    if stage_type not in rules.stage_types:
        return []  # a stage type the family does not serve at all is reported by the caller
    return sorted(name for name in rules.unsupported if parameters.get(name) is not None)


def memory_warning(family: str, free_bytes: int) -> str | None:
    """A warning when a device's free memory is below the family's hint (the load may then run out of memory)."""
    needed = family_named(family).memory_gib
    free_gib = free_bytes / 2**30
    if needed and free_gib < needed:
        return f"{free_gib:.1f} GiB free on the device; a {family} model typically needs about {needed:g} GiB"
    return None
