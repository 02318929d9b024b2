"""The performance profile's choices (gpu_worker/performance.py): which profile a setting names on a device,
which shapes the fast profile's warm-up compiles, and what the compiler does after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpu_worker import stages
from gpu_worker.models import ModelRegistry
from gpu_worker.performance import PROFILES, WarmUpCall, for_this_gpu, performance_profile, warm_up_plan
from shared.errors import OutOfMemory
from shared.settings import WorkerSettings

QUEUES = {"IN_QUEUE_URL": "in", "OUT_QUEUE_URL": "out"}


def _settings(**environment: str) -> WorkerSettings:
    return WorkerSettings.from_env(QUEUES | environment)


def test_auto_is_fast_on_cuda_and_plain_on_a_cpu() -> None:
    assert performance_profile("auto", "cuda") == PROFILES[("cuda", "fast")]
    assert performance_profile("auto", "cpu") == PROFILES[("cpu", "plain")]
    assert performance_profile("auto", "mps") == PROFILES[("cpu", "plain")]
    assert performance_profile("plain", "cuda").compiles is False
    assert performance_profile("fast", "cpu").compiles is True


def test_the_fast_cuda_profile_is_bf16_fused_and_compiled_with_cuda_graphs() -> None:
    fast = PROFILES[("cuda", "fast")]
    assert (fast.dtype, fast.channels_last, fast.fuse_qkv) == ("bfloat16", True, True)
    assert fast.compile_mode == "max-autotune"  # the mode that records CUDA graphs
    plain_cpu = PROFILES[("cpu", "plain")]
    assert (plain_cpu.dtype, plain_cpu.channels_last, plain_cpu.fuse_qkv, plain_cpu.compiles) == (
        "float32",
        False,
        False,
        False,
    )


def test_gpus_without_bf16_run_the_fast_profile_in_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    fast = PROFILES[("cuda", "fast")]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a T4 or a V100
    assert for_this_gpu(fast) == replace(fast, dtype="float16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert for_this_gpu(fast) == fast


def test_the_profile_setting_is_checked() -> None:
    with pytest.raises(RuntimeError, match="performance_profile"):
        _settings(PERFORMANCE_PROFILE="turbo")


@pytest.mark.parametrize("size", ["1024", "1024x", "x1024", "1000x1024x2", "1020x1024", "32x32", "4096x1024"])
def test_a_warm_up_size_that_is_not_width_x_height_in_range_is_refused(size: str) -> None:
    with pytest.raises(RuntimeError, match="warm-up size"):
        _settings(WARM_UP_SIZES=f'["{size}"]')


MODELS = (
    '{"xl": {"kind": "diffusers", "family": "sdxl", "source": "/m/xl"},'
    ' "small": {"kind": "diffusers", "source": "/m/small", "defaults": {"width": 640, "height": 384,'
    ' "guidanceScale": 5}}}'
)


def test_the_plan_is_each_size_for_one_to_max_batch_size_images_of_the_default_txt2img_model() -> None:
    settings = _settings(
        MODELS=MODELS,
        DEFAULT_MODELS='{"txt2img": "xl"}',
        WARM_UP_SIZES='["1024x1024", "832x1216"]',
        MAX_BATCH_SIZE="3",
    )
    assert warm_up_plan(settings) == [
        WarmUpCall("xl", 1024, 1024, 1, 7.5),
        WarmUpCall("xl", 1024, 1024, 2, 7.5),
        WarmUpCall("xl", 1024, 1024, 3, 7.5),
        WarmUpCall("xl", 832, 1216, 1, 7.5),
        WarmUpCall("xl", 832, 1216, 2, 7.5),
        WarmUpCall("xl", 832, 1216, 3, 7.5),
    ]


def test_without_sizes_the_plan_uses_the_models_defaults_else_its_familys_native_size() -> None:
    xl = _settings(MODELS=MODELS, DEFAULT_MODELS='{"txt2img": "xl"}', MAX_BATCH_SIZE="1")
    assert warm_up_plan(xl) == [WarmUpCall("xl", 1024, 1024, 1, 7.5)]
    small = _settings(MODELS=MODELS, DEFAULT_MODELS='{"txt2img": "small"}', MAX_BATCH_SIZE="1")
    assert warm_up_plan(small) == [WarmUpCall("small", 640, 384, 1, 5.0)]
    assert warm_up_plan(small)[0].parameters() == {
        "steps": 2,
        "width": 640,
        "height": 384,
        "guidanceScale": 5.0,
        "numImages": 1,
    }


def test_no_default_txt2img_model_means_nothing_to_compile() -> None:
    assert warm_up_plan(_settings(MODELS=MODELS)) == []


class _PlanRunner:
    """txt2img that fails as told for some image counts (no model: the warm-up's decisions only)."""

    def __init__(self, failure_at: dict[int, Exception]) -> None:
        self.failure_at = failure_at
        self.calls: list[int] = []

    def run(self, items: list[Any], model: str, registry: Any, hooks: Any) -> list[Any]:
        self.calls.append(len(items))
        if len(items) in self.failure_at:
            raise self.failure_at[len(items)]
        return []


@pytest.fixture
def stance() -> Iterator[Callable[[], str]]:
    import torch
    import torch._dynamo.eval_frame

    yield lambda: str(torch._dynamo.eval_frame._stance.stance)
    torch.compiler.set_stance("default")


@pytest.mark.parametrize(
    ("failures", "expected_stance", "expected_calls"),
    [
        ({}, "eager_on_recompile", [1, 2, 3]),  # compiled: warmed shapes compiled, the rest eager
        ({2: OutOfMemory("too big")}, "eager_on_recompile", [1, 2, 3]),  # one shape does not fit: skip it
        ({2: RuntimeError("inductor needs a C++ compiler")}, "force_eager", [1, 2]),  # broken: all eager
    ],
)
def test_the_warm_up_compiles_the_plan_then_stops_compiling_or_falls_back_to_eager(
    failures: dict[int, Exception],
    expected_stance: str,
    expected_calls: list[int],
    stance: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    runner = _PlanRunner(failures)
    monkeypatch.setattr(stages, "runner_for", lambda stage_type: runner)
    settings = _settings(
        MODELS=MODELS, DEFAULT_MODELS='{"txt2img": "small"}', MAX_BATCH_SIZE="3", COMPILE_CACHE_DIR=str(tmp_path)
    )
    ModelRegistry(settings, profile=PROFILES[("cpu", "fast")]).warm_up()
    assert runner.calls == expected_calls  # the plan only: no separate 64x64 warm-up of the planned model
    assert stance() == expected_stance
