"""Stage runners: one module per stage type, listed in RUNNER_MODULES (a new type is one module and one line).

A runner turns a batch of StageItems of the same batch key into one model call. Batch keys are computed here,
without importing torch, from the parameters that decide a batch's shape; runners are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpu_worker.loras import lora_set
from shared.errors import BadInput
from shared.settings import WorkerSettings

RUNNER_MODULES: dict[str, str] = {
    "txt2img": "gpu_worker.stages.txt2img",
    "img2img": "gpu_worker.stages.img2img",
    "txt2txt": "gpu_worker.stages.txt2txt",
}

# Parameters that must be equal for items to share one model call.
BATCH_KEY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "txt2img": ("width", "height", "steps", "scheduler", "guidanceScale", "numImages"),
    "img2img": ("steps", "strength", "guidanceScale"),
    "txt2txt": ("maxNewTokens", "temperature", "topP"),
}


@dataclass
class StageItem:
    """One execution's input to its current stage: the rendered prompt, parameters, and an input image."""

    prompt: str
    params: dict[str, Any]
    image: Any = None  # a PIL image for img2img


@dataclass
class StageOutput:
    texts: list[str] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)  # PIL images


class StageHooks(Protocol):
    def on_step(self, step: int, steps: int) -> None: ...

    def should_stop(self) -> bool: ...


class StageRunner(Protocol):
    def run(self, items: list[StageItem], model: str, registry: Any, hooks: StageHooks) -> list[StageOutput]: ...

    def warm_up_parameters(self) -> dict[str, Any]: ...


def batch_key(stage_type: str, model: str, item: StageItem) -> Hashable:
    """Items with equal keys can run as one batched call."""
    params = item.params
    key: tuple[Any, ...] = (stage_type, model, *(params.get(name) for name in BATCH_KEY_PARAMETERS[stage_type]))
    if stage_type == "img2img":
        key += (getattr(item.image, "size", None),)  # one batch, one input size
    if params.get("loras"):
        key += (lora_set(params["loras"]),)  # one adapter set per model call
    if stage_type == "txt2txt" and params.get("temperature", 0) > 0 and params.get("seed") is not None:
        key += (params["seed"],)  # sampling shares one random stream: only equal seeds stay reproducible
    return key


def model_for(settings: WorkerSettings, stage_type: str, requested: str | None) -> str:
    """The model a stage runs on: its `model` parameter, else the deployment's default for the type."""
    name = requested or settings.default_models.get(stage_type)
    if not name:
        raise BadInput(f"no model given and no default model for {stage_type}")
    if name not in settings.models:
        raise BadInput(f"unknown model {name!r}")
    return name


def runner_for(stage_type: str) -> StageRunner:
    try:
        module = RUNNER_MODULES[stage_type]
    except KeyError:
        raise ValueError(f"no runner for stage type {stage_type!r}") from None
    return importlib.import_module(module).RUNNER  # type: ignore[no-any-return]


class StageCancelled(Exception):
    """Raised from a step hook to stop a model call: every item of the batch was cancelled."""
