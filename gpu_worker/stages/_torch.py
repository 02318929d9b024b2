"""What the torch-based runners share: seeds and generators, out-of-memory classification, step hooks."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import torch

from gpu_worker.stages import StageCancelled, StageHooks
from shared.errors import BadInput, OutOfMemory


def seed_of(params: dict[str, Any]) -> int:
    seed = params.get("seed")
    return int(seed) if seed is not None else secrets.randbelow(2**63)


def generators(seeds: list[int]) -> list[torch.Generator]:
    """CPU generators: the same seed gives the same noise on any device."""
    return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]


@contextlib.contextmanager
def classified_failures() -> Iterator[None]:
    """Out-of-memory becomes OutOfMemory (the execution fails at once); the model's ValueErrors are bad input."""
    try:
        with torch.inference_mode():
            yield
    except StageCancelled:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise OutOfMemory("the model ran out of GPU memory; try a smaller size or fewer images") from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            torch.cuda.empty_cache()
            raise OutOfMemory(f"the model ran out of memory: {exc}") from exc
        raise
    except ValueError as exc:
        raise BadInput(f"the model rejected its input: {exc}") from exc


def diffusion_step_callback(hooks: StageHooks, expected_steps: int) -> Any:
    """A diffusers callback_on_step_end reporting each step and stopping when every item was cancelled."""

    def on_step_end(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps = int(getattr(pipeline, "num_timesteps", 0) or expected_steps)
        hooks.on_step(step_index + 1, steps)
        if hooks.should_stop():
            raise StageCancelled
        return callback_kwargs

    return on_step_end


@contextlib.contextmanager
def scheduler_named(pipeline: Any, name: str | None) -> Iterator[None]:
    """Run with the diffusers scheduler class `name` (built from the pipeline's own config), then restore."""
    if not name:
        yield
        return
    import diffusers

    scheduler_class = getattr(diffusers, name, None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
        raise BadInput(f"unknown scheduler {name!r}")
    original = pipeline.scheduler
    pipeline.scheduler = scheduler_class.from_config(original.config)
    try:
        yield
    finally:
        pipeline.scheduler = original


def negative_prompts(params_list: list[dict[str, Any]]) -> list[str] | None:
    values = [p.get("negativePrompt") for p in params_list]
    return None if not any(values) else [v or "" for v in values]
