"""The model registry on the tiny models: weights of another family than configured are refused, LoRA adapters
come from S3 (moto) as well as from a directory, and instruct models get their chat template and system prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_worker.models import ModelRegistry, _SilentHooks
from gpu_worker.stages import StageItem
from gpu_worker.stages.txt2txt import RUNNER as TEXT_RUNNER
from gpu_worker.stages.txt2txt import encode_prompts
from gpu_worker.tiny_models import TINY_CHAT, TINY_GPT2, TINY_LORA, TINY_LORA_NAME, TINY_SD, TINY_SDXL
from shared.aws import client
from shared.errors import BadInput
from shared.settings import ModelSource, StackSettings
from shared.storage import BlobStore

pytestmark = pytest.mark.timeout(120)


def _registry(settings: StackSettings, models: dict[str, ModelSource], cache: Path) -> ModelRegistry:
    configured = settings.model_copy(update={"models": models, "device": "cpu", "model_cache_dir": str(cache)})
    return ModelRegistry(configured, BlobStore(client("s3", settings)))


def test_weights_of_another_family_than_configured_are_refused(
    stack_env: StackSettings, tiny_models_dir: Path, tmp_path: Path
) -> None:
    wrong = {"xl": ModelSource(kind="diffusers", family="sd15", source=str(tiny_models_dir / TINY_SDXL))}
    with pytest.raises(RuntimeError, match="configured as family 'sd15' but its weights load as StableDiffusionXL"):
        _registry(stack_env, wrong, tmp_path).diffusion("xl")


def test_a_lora_from_s3_is_downloaded_once_and_applied(
    stack_env: StackSettings, tiny_models_dir: Path, tmp_path: Path
) -> None:
    s3 = client("s3", stack_env)
    weights = (tiny_models_dir / TINY_LORA / "pytorch_lora_weights.safetensors").read_bytes()
    s3.put_object(Bucket=stack_env.pipelines_bucket, Key="loras/ink/pytorch_lora_weights.safetensors", Body=weights)
    source = ModelSource(
        kind="diffusers",
        source=str(tiny_models_dir / TINY_SD),
        loras={TINY_LORA_NAME: f"s3://{stack_env.pipelines_bucket}/loras/ink/"},
    )
    registry = _registry(stack_env, {"sd": source}, tmp_path)
    pipeline = registry.diffusion("sd")
    registry.use_loras("sd", pipeline, [{"name": TINY_LORA_NAME, "scale": 0.5}])
    assert (tmp_path / "loras" / "sd" / TINY_LORA_NAME / "pytorch_lora_weights.safetensors").exists()
    assert pipeline.get_active_adapters() == [TINY_LORA_NAME]
    registry.use_loras("sd", pipeline, None)
    with pytest.raises(BadInput, match="no LoRA 'clay'"):
        registry.use_loras("sd", pipeline, [{"name": "clay", "scale": 1.0}])


def test_a_chat_template_wraps_the_prompt_after_the_system_prompt(
    stack_env: StackSettings, tiny_models_dir: Path, tmp_path: Path
) -> None:
    models = {
        "chat": ModelSource(kind="causal-lm", chat=True, source=str(tiny_models_dir / TINY_CHAT)),
        "plain": ModelSource(kind="causal-lm", source=str(tiny_models_dir / TINY_GPT2)),
    }
    registry = _registry(stack_env, models, tmp_path)
    _, tokenizer = registry.causal_lm("chat")
    item = StageItem(prompt="a fox", params={"system": "be brief"})
    text = tokenizer.decode(encode_prompts(tokenizer, [item])["input_ids"][0])
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n"
    params = {"maxNewTokens": 2, "temperature": 0.0, "topP": 1.0, "system": "be brief"}
    with pytest.raises(BadInput, match="no chat template"):
        TEXT_RUNNER.run([StageItem(prompt="a fox", params=params)], "plain", registry, _SilentHooks())
