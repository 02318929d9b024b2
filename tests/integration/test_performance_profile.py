"""The fast profile on the tiny models, on the CPU: fused QKV projections and channels-last give the plain
profile's images for every family; a model with LoRA adapters is not fused (its adapters would be bypassed);
and, in a worker process of its own, torch.compile's warm-up compiles the planned shapes, serves them without
compiling again, runs an unplanned shape eagerly, and a restarted process takes its kernels from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_worker.models import ModelRegistry, _SilentHooks
from gpu_worker.performance import PROFILES, PerformanceProfile, SharedCompileCache
from gpu_worker.stages import StageItem
from gpu_worker.stages.txt2img import RUNNER
from gpu_worker.tiny_models import TINY_FLUX, TINY_LORA, TINY_LORA_NAME, TINY_SD, TINY_SD3, TINY_SDXL
from shared.aws import client
from shared.settings import ModelSource, StackSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
FUSED_EAGER = PerformanceProfile("fused", "float32", channels_last=True, fuse_qkv=True, compile_mode=None)
FAMILY_MODELS = {"sd15": TINY_SD, "sdxl": TINY_SDXL, "sd3": TINY_SD3, "flux": TINY_FLUX}


def _settings(models: dict[str, ModelSource], compile_cache: Path) -> WorkerSettings:
    environment = {
        "IN_QUEUE_URL": "in",
        "OUT_QUEUE_URL": "out",
        "DEVICE": "cpu",
        "COMPILE_CACHE_DIR": str(compile_cache),
    }
    return WorkerSettings.from_env(environment).model_copy(update={"models": models})


def _family_settings(family: str, models_dir: Path, compile_cache: Path) -> WorkerSettings:
    """Model "m": the tiny model of `family`."""
    source = str(models_dir / FAMILY_MODELS[family])
    return _settings({"m": ModelSource(kind="diffusers", family=family, source=source)}, compile_cache)


def _image(registry: ModelRegistry, model: str, loras: list[dict[str, Any]] | None = None) -> np.ndarray:
    params: dict[str, Any] = {"steps": 2, "width": 64, "height": 64, "guidanceScale": 3.5, "numImages": 1}
    params |= {"seed": 7, "loras": loras}
    (output,) = RUNNER.run([StageItem(prompt="a red fox", params=params)], model, registry, _SilentHooks())
    return np.asarray(output.images[0], dtype=np.int16)


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_fused_qkv_and_channels_last_give_the_plain_profiles_image(
    family: str, tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = _family_settings(family, tiny_models_dir, tmp_path)
    plain = _image(ModelRegistry(settings), "m")
    fast = ModelRegistry(settings, profile=FUSED_EAGER)
    fused = _image(fast, "m")
    pipeline = fast.diffusion("m")
    denoiser = pipeline.unet if hasattr(pipeline, "unet") else pipeline.transformer
    assert any(getattr(module, "fused_projections", False) for module in denoiser.modules())
    assert np.abs(fused - plain).max() <= 2  # 8-bit pixels: only float rounding differs


def test_a_model_with_lora_adapters_is_not_fused_and_its_adapter_still_applies(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    lora = str(tiny_models_dir / TINY_LORA)
    models = {"sd": ModelSource(kind="diffusers", source=str(tiny_models_dir / TINY_SD), loras={TINY_LORA_NAME: lora})}
    registry = ModelRegistry(_settings(models, tmp_path), profile=FUSED_EAGER)
    without = _image(registry, "sd")
    with_lora = _image(registry, "sd", [{"name": TINY_LORA_NAME, "scale": 1.0}])
    unet = registry.diffusion("sd").unet
    assert not any(getattr(module, "fused_projections", False) for module in unet.modules())
    assert np.abs(with_lora - without).max() > 10


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_each_family_compiles_as_one_graph_and_gives_the_plain_image(
    family: str, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """fullgraph=True: a graph break in a family's denoiser or VAE decoder fails here, not on a GPU at boot."""
    from torch._dynamo.utils import counters

    settings = _family_settings(family, tiny_models_dir, tmp_path)
    plain = _image(ModelRegistry(settings), "m")
    compiled = ModelRegistry(settings, profile=PROFILES[("cpu", "fast")])
    first = _image(compiled, "m")
    graphs = counters["stats"]["unique_graphs"]
    again = _image(compiled, "m")
    assert compiled.applied["m"] == ["channels-last", "fused-qkv", "compiled:default"]
    assert counters["stats"]["unique_graphs"] == graphs  # the same shape again: no new graph
    assert np.abs(first - plain).max() <= 2
    assert np.array_equal(first, again)


def _compiling_worker(models_dir: Path, cache: Path, aws: dict[str, str] | None = None) -> dict[str, Any]:
    """A worker process's warm-up and three requests; `aws`: the moto stack's environment (shares through S3)."""
    environment = (
        os.environ
        | (aws or {})
        | {
            "IN_QUEUE_URL": "in",
            "OUT_QUEUE_URL": "out",
            "DEVICE": "cpu",
            "PERFORMANCE_PROFILE": "fast",
            "COMPILE_CACHE_DIR": str(cache),
            "MAX_BATCH_SIZE": "2",
            "WARM_UP_SIZES": '["64x64"]',
            "MODELS": json.dumps({"sd": {"kind": "diffusers", "source": str(models_dir / TINY_SD)}}),
            "DEFAULT_MODELS": '{"txt2img": "sd"}',
        }
    )
    program = [sys.executable, "-m", "tests.integration.worker_programs.compiled_warm_up"]
    done = subprocess.run(program, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_warm_up_compiles_once_then_a_restart_loads_from_disk_and_a_new_instance_from_s3(
    tiny_models_dir: Path, tmp_path: Path, stack_environment: dict[str, str]
) -> None:
    first = _compiling_worker(tiny_models_dir, tmp_path / "first-instance", stack_environment)
    # UNet and VAE decoder, for 1 and 2 images of 64x64: four graphs, compiled at warm-up, none after it.
    assert first["warm_up"]["graphs"] == 4
    assert (first["warm_up"]["cache_misses"], first["warm_up"]["cache_hits"]) == (4, 0)
    assert first["serving"]["graphs"] == 0  # the planned shapes, then 96x96 (not planned: eager)
    assert first["serving"]["sizes"] == [[64, 64], [64, 64], [96, 96]]
    assert first["compiled"] == ["channels-last", "fused-qkv", "compiled:default"]
    assert any((tmp_path / "first-instance").rglob("*.py"))  # the generated kernels, on disk
    settings = StackSettings.from_env(stack_environment)
    s3 = client("s3", settings)
    (stored,) = s3.list_objects_v2(Bucket=settings.results_bucket, Prefix=SharedCompileCache.PREFIX)["Contents"]

    restarted = _compiling_worker(tiny_models_dir, tmp_path / "first-instance")  # its own disk, no S3
    assert (restarted["warm_up"]["cache_misses"], restarted["warm_up"]["cache_hits"]) == (0, 4)
    assert restarted["serving"]["graphs"] == 0

    # Another instance: an empty disk; the same model, versions, profile and shapes.
    second = _compiling_worker(tiny_models_dir, tmp_path / "second-instance", stack_environment)
    assert (second["warm_up"]["cache_misses"], second["warm_up"]["cache_hits"]) == (0, 4)
    assert second["serving"]["graphs"] == 0
    listed = s3.list_objects_v2(Bucket=settings.results_bucket, Prefix=SharedCompileCache.PREFIX)
    assert listed["KeyCount"] == 1  # loaded, not stored again
    print(
        f"warm-up {first['warm_up']['seconds']} s compiling; restarted {restarted['warm_up']['seconds']} s from"
        f" its disk; a new instance {second['warm_up']['seconds']} s from S3 ({stored['Size']} bytes)"
    )
