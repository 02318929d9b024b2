"""The model registry: model names (settings.models) to loaded pipelines, cached per process.

A model comes from a local directory, an S3 prefix (downloaded once into settings.model_cache_dir) or a hub
id (only where the deployment has internet). On CUDA: fp16, SDPA attention (diffusers' default on torch 2),
channels-last UNet, optional torch.compile; on CPU: float32. Everything runs under `torch.inference_mode()`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch

from shared.errors import BadInput
from shared.settings import ModelSource, WorkerSettings
from shared.storage import BlobStore, S3Uri

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


class ModelRegistry:
    def __init__(self, settings: WorkerSettings, blobs: BlobStore | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._blobs = blobs
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # img2img builds on the cached txt2img pipeline

    def _source(self, name: str, kind: str) -> str:
        spec: ModelSource = self.settings.models[name]
        if spec.kind != kind:
            raise BadInput(f"model {name!r} is a {spec.kind} model, not {kind}")
        if spec.source.startswith("s3://"):
            return str(self._download(name, S3Uri.parse(spec.source)))
        return spec.source

    def _download(self, name: str, location: S3Uri) -> Path:
        target = Path(self.settings.model_cache_dir) / name
        marker = target / ".complete"
        if not marker.exists():
            if self._blobs is None:
                raise RuntimeError("an S3 model source needs a blob store")
            log.info("downloading model %s from %s", name, location)
            self._blobs.download_prefix(location.bucket, location.key, target)
            marker.touch()
        return target

    def is_loaded(self, name: str) -> bool:
        """Whether a pipeline of model `name` is in memory (a first call loads it: minutes for large weights)."""
        return any(loaded == name for _, loaded in self._loaded)

    def _cached(self, key: tuple[str, str], load: Any) -> Any:
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load()
            return self._loaded[key]

    def diffusion(self, name: str) -> Any:
        """The text-to-image pipeline of `name`."""
        return self._cached(("txt2img", name), lambda: self._load_diffusion(name))

    def img2img(self, name: str) -> Any:
        """An image-to-image pipeline sharing the text-to-image pipeline's weights."""
        from diffusers import StableDiffusionImg2ImgPipeline

        def build() -> Any:
            components = dict(self.diffusion(name).components)
            components.setdefault("requires_safety_checker", False)
            pipeline = StableDiffusionImg2ImgPipeline(**components)
            pipeline.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]  # a DiffusionPipeline method
            return pipeline

        return self._cached(("img2img", name), build)

    def causal_lm(self, name: str) -> tuple[Any, Any]:
        """(model, tokenizer) of `name`, the tokenizer padding on the left for batched generation."""
        return self._cached(("txt2txt", name), lambda: self._load_causal_lm(name))  # type: ignore[no-any-return]

    def _load_diffusion(self, name: str) -> Any:
        from diffusers import StableDiffusionPipeline

        source = self._source(name, "diffusers")
        local = Path(source).exists()
        pipeline = StableDiffusionPipeline.from_pretrained(
            source,
            dtype=self.dtype,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=local,
        )
        pipeline.set_progress_bar_config(disable=True)
        pipeline = pipeline.to(self.device)
        if self.device == "cuda":
            pipeline.unet.to(memory_format=torch.channels_last)
            if self.settings.torch_compile:
                pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune-no-cudagraphs")
        return pipeline

    def _load_causal_lm(self, name: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = self._source(name, "causal-lm")
        local = Path(source).exists()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype, local_files_only=local)
        model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' stubs type `to` for models only
        return model, tokenizer

    def warm_up(self) -> None:
        """Load every default model and run it once, so the first request is not slow."""
        from gpu_worker.stages import StageItem, runner_for

        for stage_type, name in self.settings.default_models.items():
            if stage_type == "img2img":
                continue  # shares txt2img's weights
            runner = runner_for(stage_type)
            item = StageItem(prompt="warm up", params=runner.warm_up_parameters())
            try:
                runner.run([item], name, self, _SilentHooks())
            except Exception:
                log.exception("warm-up of %s (%s) failed", name, stage_type)


class _SilentHooks:
    def on_step(self, step: int, steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False
