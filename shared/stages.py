"""Stage types, their parameters with defaults and limits, and the resolved request the worker runs.

One place for what a stage may be: the API validates pipelines and overrides with these models,
`GET /stage-types` lists them, and the worker fills defaults from them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from shared.families import family_named, unsupported_parameters

if TYPE_CHECKING:  # the settings are read on first use, not at a handler's import
    from shared.settings import ModelSource

PROMPT_MAX_BYTES = 16 * 1024
SYSTEM_PROMPT_MAX_BYTES = 4 * 1024
MAX_STAGES = 16
TEMPLATE_PATTERN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PREVIOUS = "previous"


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; a JSON boolean is never a number here.
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]

# The diffusers schedulers a txt2img stage may name: each builds from a Stable Diffusion pipeline's scheduler
# config with the worker's dependencies (an allowlist, so a name never reaches getattr on the diffusers module).
SchedulerName = Literal[
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str | None = Field(default=None, min_length=1, max_length=200, description="Model name; default per type")
    seed: Int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Random seed; when absent, one derived from the execution and stage",
    )


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


MAX_LORAS = 4


class LoraRef(BaseModel):
    """A LoRA adapter to apply: one of the model's configured `loras` (GET /models), at `scale`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scale: float = Field(default=1.0, ge=0, le=2)


def _distinct_loras(value: list[LoraRef] | None) -> list[LoraRef] | None:
    if value is not None and len({lora.name for lora in value}) != len(value):
        raise ValueError("each LoRA at most once")
    return value


class Txt2ImgParameters(_Params):
    steps: Int = Field(default=25, ge=1, le=150)
    guidance_scale: Float = Field(default=7.5, ge=0, le=30, alias="guidanceScale")
    width: Int = Field(default=512, ge=64, le=1024)
    height: Int = Field(default=512, ge=64, le=1024)
    negative_prompt: str | None = Field(default=None, max_length=PROMPT_MAX_BYTES, alias="negativePrompt")
    scheduler: SchedulerName | None = Field(default=None, description="Diffusers scheduler class name")
    num_images: Int = Field(default=1, ge=1, le=4, alias="numImages")
    loras: list[LoraRef] | None = Field(default=None, max_length=MAX_LORAS, description="LoRA adapters to apply")

    _check_size = field_validator("width", "height")(_multiple_of_8)
    _check_loras = field_validator("loras")(_distinct_loras)


class Img2ImgParameters(_Params):
    strength: Float = Field(default=0.75, ge=0, le=1)
    steps: Int = Field(default=25, ge=1, le=150)
    guidance_scale: Float = Field(default=7.5, ge=0, le=30, alias="guidanceScale")
    negative_prompt: str | None = Field(default=None, max_length=PROMPT_MAX_BYTES, alias="negativePrompt")
    loras: list[LoraRef] | None = Field(default=None, max_length=MAX_LORAS, description="LoRA adapters to apply")

    _check_loras = field_validator("loras")(_distinct_loras)


class Txt2TxtParameters(_Params):
    max_new_tokens: Int = Field(default=64, ge=1, le=2048, alias="maxNewTokens")
    temperature: Float = Field(default=0.7, ge=0, le=2)
    top_p: Float = Field(default=0.95, ge=0, le=1, alias="topP")
    system: str | None = Field(
        default=None, max_length=SYSTEM_PROMPT_MAX_BYTES, description="System prompt (models with a chat template)"
    )

    @field_validator("system")
    @classmethod
    def _system_bytes(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > SYSTEM_PROMPT_MAX_BYTES:
            raise ValueError(f"at most {SYSTEM_PROMPT_MAX_BYTES} bytes")
        return value


StageType = Literal["txt2txt", "txt2img", "img2img"]

PARAMETER_MODELS: dict[str, type[_Params]] = {
    "txt2txt": Txt2TxtParameters,
    "txt2img": Txt2ImgParameters,
    "img2img": Img2ImgParameters,
}
STAGE_DESCRIPTIONS: dict[str, str] = {
    "txt2txt": "Text to text with a causal language model; outputs text.",
    "txt2img": "Text to image with a diffusion model; outputs PNG images.",
    "img2img": "Image to image with a diffusion model; takes the previous stage's image or variables.image.",
}
OUTPUT_KINDS: dict[str, str] = {"txt2txt": "text", "txt2img": "image", "img2img": "image"}


def parse_parameters(stage_type: str, parameters: dict[str, Any]) -> _Params:
    """Validate a stage's parameters (camelCase keys, unknown keys rejected); raises pydantic's ValidationError."""
    return PARAMETER_MODELS[stage_type].model_validate(parameters)


def parameters_to_wire(params: _Params) -> dict[str, Any]:
    """The camelCase form with defaults filled, as stored in request.json."""
    return params.model_dump(by_alias=True, exclude_none=True)


def stage_types_document() -> list[dict[str, Any]]:
    """What `GET /stage-types` answers: each type with its parameters, defaults and limits (JSON Schema)."""
    return [
        {
            "type": name,
            "description": STAGE_DESCRIPTIONS[name],
            "output": OUTPUT_KINDS[name],
            "parameters": model.model_json_schema(by_alias=True),
        }
        for name, model in PARAMETER_MODELS.items()
    ]


def models_document(models: dict[str, ModelSource], default_models: dict[str, str]) -> list[dict[str, Any]]:
    """What `GET /models` answers: the deployment's models by name, each with its family and stage types."""
    defaults = set(default_models.values())
    return [
        {
            "name": name,
            "kind": source.kind,
            "family": source.family,
            "stageTypes": list(family_named(source.family).stage_types),
            "default": name in defaults,
            "loras": sorted(source.loras),
            "defaults": source.defaults,
        }
        for name, source in sorted(models.items())
    ]


def _parameter_names(stage_type: str) -> set[str]:
    return {field.alias or name for name, field in PARAMETER_MODELS[stage_type].model_fields.items()}


def check_model_defaults(family: str, defaults: dict[str, Any]) -> None:
    """A model's parameter defaults must be valid parameters of a stage type its family serves (else ValueError)."""
    stage_types = family_named(family).stage_types
    known = set().union(*(_parameter_names(stage_type) for stage_type in stage_types)) - {"model"}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"defaults {unknown} are not parameters of {'/'.join(stage_types)} stages")
    for stage_type in stage_types:
        names = _parameter_names(stage_type)
        try:
            parse_parameters(stage_type, {key: value for key, value in defaults.items() if key in names})
        except ValidationError as exc:
            raise ValueError(f"defaults for {stage_type}: {exc}") from None


def with_model_defaults(
    stage_type: str, parameters: dict[str, Any], models: dict[str, ModelSource], default_models: dict[str, str]
) -> dict[str, Any]:
    """`parameters` (camelCase, not yet validated) under the defaults of the model they name (or the default)."""
    name = parameters.get("model") or default_models.get(stage_type)
    source = models.get(name) if isinstance(name, str) else None
    if source is None or not source.defaults:
        return parameters
    names = _parameter_names(stage_type)
    return {**{key: value for key, value in source.defaults.items() if key in names}, **parameters}


def family_problems(
    stage_type: str, parameters: dict[str, Any], models: dict[str, ModelSource], default_models: dict[str, str]
) -> list[tuple[str, str]]:
    """(parameter, message) for what the stage's model cannot do: another stage type, a parameter its family
    does not support, `system` without a chat template. `parameters` are camelCase; an unknown model is the
    caller's to report (nothing is said here)."""
    name = parameters.get("model") or default_models.get(stage_type)
    source = models.get(name) if name else None
    if source is None:
        return []
    family = family_named(source.family)
    if stage_type not in family.stage_types:
        return [("model", f"model {name!r} ({family.name}) does not serve {stage_type} stages")]
    problems = [
        (parameter, f"model {name!r} ({family.name}) does not support {parameter}")
        for parameter in unsupported_parameters(family.name, stage_type, parameters)
    ]
    if parameters.get("system") is not None and not source.chat:
        problems.append(("system", f"model {name!r} has no chat template, so no system prompt"))
    unknown = sorted({lora["name"] for lora in parameters.get("loras") or []} - set(source.loras))
    if unknown:
        offered = ", ".join(sorted(source.loras)) or "none"
        problems.append(("loras", f"model {name!r} has no LoRA {', '.join(unknown)} (it has: {offered})"))
    return problems


def template_variables(text: str) -> set[str]:
    """Names used as {{name}} in a prompt template ('previous' included if used)."""
    return set(TEMPLATE_PATTERN.findall(text))


def previous_problem(stage_types: Sequence[str], index: int) -> str | None:
    """Why stage `index` may not use {{previous}}: it needs the text output of a text stage right before it."""
    if index == 0:
        return "the first stage has no previous output for {{previous}}"
    before = stage_types[index - 1]
    if OUTPUT_KINDS[before] != "text":
        return f"{{{{previous}}}} needs text from the stage before; stage {index - 1} ({before}) outputs images"
    return None


def rendered_bytes(text: str, variables: dict[str, str]) -> int:
    """UTF-8 size of a prompt with its {{name}} variables filled (missing ones and {{previous}} count as empty)."""

    def value(match: re.Match[str]) -> str:
        return "" if match.group(1) == PREVIOUS else variables.get(match.group(1), "")

    return len(TEMPLATE_PATTERN.sub(value, text).encode())


def render_template(text: str, variables: dict[str, str], previous: str | None) -> str:
    """Replace {{previous}} and {{name}}; a name with no value raises KeyError (the caller maps it)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == PREVIOUS:
            if previous is None:
                raise KeyError(PREVIOUS)
            return previous
        return variables[name]

    return TEMPLATE_PATTERN.sub(substitute, text)


class StageDefinition(BaseModel):
    """A stage as stored in a pipeline (the seed's format)."""

    model_config = ConfigDict(extra="forbid")

    type: StageType
    inline: bool = True
    body: str = Field(max_length=PROMPT_MAX_BYTES)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ResolvedStage(BaseModel):
    """A stage of request.json: parameters validated with defaults filled and overrides applied.

    `body` is the prompt template when inline, else `bodyUri` names the S3 object holding it. Templates are
    rendered by the worker (it alone knows `{{previous}}`); variables are checked at submission.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    index: int = Field(ge=0)
    type: StageType
    body: str | None = None
    body_uri: str | None = Field(default=None, alias="bodyUri")
    parameters: dict[str, Any] = Field(default_factory=dict)


class ExecutionRequest(BaseModel):
    """request.json: everything the worker needs, so it never reads the API's tables."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: Literal[1] = 1
    execution_id: str = Field(alias="executionId")
    pipeline_id: str = Field(alias="pipelineId")
    user_id: str = Field(alias="userId")
    backend: str
    stages: list[ResolvedStage] = Field(min_length=1, max_length=MAX_STAGES)
    variables: dict[str, str] = Field(default_factory=dict)
    # An input image for img2img given as variables.image, as an s3:// URI of an upload.
    image_uri: str | None = Field(default=None, alias="imageUri")
    created_at: str = Field(alias="createdAt")
    deadline: str  # ISO time after which the worker fails the execution with TIMEOUT

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class ResultOutput(BaseModel):
    """One output in result.json; `key` is the S3 key in the results bucket (images) and `text` inline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    stage: int
    index: int
    type: Literal["text", "image"]
    content_type: str = Field(alias="contentType")
    key: str | None = None
    text: str | None = None


class ResultManifest(BaseModel):
    """result.json, written by the worker beside the outputs at s3://<results>/executions/<id>/."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: Literal[1] = 1
    execution_id: str = Field(alias="executionId")
    outputs: list[ResultOutput]
    finished_at: str = Field(alias="finishedAt")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def execution_prefix(execution_id: str) -> str:
    """Where an execution's request, outputs and manifest live in the results bucket."""
    return f"executions/{execution_id}/"


def request_key(execution_id: str) -> str:
    return f"{execution_prefix(execution_id)}request.json"


def manifest_key(execution_id: str) -> str:
    return f"{execution_prefix(execution_id)}result.json"
