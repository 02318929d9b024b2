"""The model registry: model names (settings.models) to loaded pipelines, cached per process.

A model comes from a local directory, an S3 prefix (downloaded once into settings.model_cache_dir) or a hub
id (only where the deployment has internet). How it runs on the device (dtype, channels-last, fused QKV,
torch.compile with CUDA graphs and its warm-up) is the performance profile's (gpu_worker/performance.py).
Everything runs under `torch.inference_mode()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch

from gpu_worker.loras import LoraSet, activate, load_adapter, lora_set
from gpu_worker.performance import (
    EAGER_STANCE,
    SERVING_STANCE,
    PerformanceProfile,
    SharedCompileCache,
    WarmUpCall,
    compile_cache_key,
    for_this_gpu,
    profile_of,
    resolve_device,
    speed_up,
    use_compile_cache,
    warm_up_plan,
)
from shared.errors import BadInput, OutOfMemory
from shared.families import family_of_pipeline_class, memory_warning
from shared.settings import ModelSource, WorkerSettings
from shared.storage import BlobStore, S3Uri

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(
        self, settings: WorkerSettings, blobs: BlobStore | None = None, profile: PerformanceProfile | None = None
    ) -> None:
        """`profile`: the settings' performance profile unless given (the benchmarks compare two)."""
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.profile = profile or profile_of(settings)
        if self.device == "cuda":
            self.profile = for_this_gpu(self.profile)
        self.dtype = self.profile.torch_dtype()
        if self.profile.compiles:
            use_compile_cache(settings.compile_cache_dir, self.device)
        self._blobs = blobs
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # img2img builds on the cached txt2img pipeline
        self._loras_loaded: dict[str, set[str]] = {}  # model -> adapters loaded into its (shared) modules
        self._loras_active: dict[str, LoraSet] = {}  # model -> the adapter set its modules run with now
        self.applied: dict[str, list[str]] = {}  # diffusion model -> what its performance profile applied

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
        """An image-to-image pipeline of the model's family sharing the text-to-image pipeline's weights."""
        from diffusers import AutoPipelineForImage2Image

        def build() -> Any:
            pipeline = AutoPipelineForImage2Image.from_pipe(self.diffusion(name))
            pipeline.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]  # a DiffusionPipeline method
            return pipeline

        return self._cached(("img2img", name), build)

    def use_loras(self, name: str, pipeline: Any, loras: list[dict[str, Any]] | None) -> None:
        """Run `name`'s next call with exactly these LoRA adapters (loaded on first use, then switched).

        txt2img and img2img pipelines of a model share their modules, so the adapter state is per model."""
        wanted = lora_set(loras)
        with self._lock:
            if self._loras_active.get(name, ()) == wanted:
                return
            loaded = self._loras_loaded.setdefault(name, set())
            if not loaded and not wanted:
                return  # never had an adapter
            for adapter, _ in wanted:
                if adapter not in loaded:
                    load_adapter(pipeline, self._lora_path(name, adapter), adapter)
                    loaded.add(adapter)
            activate(pipeline, wanted)
            self._loras_active[name] = wanted

    def _lora_path(self, name: str, adapter: str) -> Path:
        try:
            source = self.settings.models[name].loras[adapter]
        except KeyError:
            raise BadInput(f"model {name!r} has no LoRA {adapter!r}") from None
        if source.startswith("s3://"):
            return self._download(f"loras/{name}/{adapter}", S3Uri.parse(source))
        return Path(source)

    def family(self, name: str) -> str:
        """The model's family (shared.families), as configured and checked against its weights at load."""
        return self.settings.models[name].family

    def causal_lm(self, name: str) -> tuple[Any, Any]:
        """(model, tokenizer) of `name`, the tokenizer padding on the left for batched generation."""
        return self._cached(("txt2txt", name), lambda: self._load_causal_lm(name))  # type: ignore[no-any-return]

    def _load_diffusion(self, name: str) -> Any:
        """Any family's text-to-image pipeline: diffusers picks the class from the weights' model_index.json."""
        from diffusers import AutoPipelineForText2Image

        source = self._source(name, "diffusers")
        local = Path(source).exists()
        family = self.family(name)
        # SD 1.x/2.x checkpoints may name a safety checker; the service does not run one.
        extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd15" else {}
        extra |= absent_components(source)
        if self.device == "cuda" and (warning := memory_warning(family, torch.cuda.mem_get_info()[0])):
            log.warning("loading model %s: %s", name, warning)
        pipeline = AutoPipelineForText2Image.from_pretrained(source, dtype=self.dtype, local_files_only=local, **extra)
        check_family(name, family, type(pipeline).__name__)
        pipeline.set_progress_bar_config(disable=True)
        pipeline = pipeline.to(self.device)
        applied = speed_up(pipeline, self.profile, has_loras=bool(self.settings.models[name].loras))
        self.applied[name] = applied
        log.info("model %s on %s, %s profile: %s", name, self.device, self.profile.name, ", ".join(applied) or "-")
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
        """Load every default model and run it once, so the first request is not slow. With a compiling profile
        the default txt2img model is warmed by compiling each planned shape (performance.warm_up_plan); then
        the compiler stops compiling (SERVING_STANCE), or, if compiling failed, runs everything eagerly."""
        from gpu_worker.stages import StageItem, runner_for

        plan = warm_up_plan(self.settings) if self.profile.compiles else []
        for stage_type, name in self.settings.default_models.items():
            if stage_type == "img2img" or (stage_type == "txt2img" and any(call.model == name for call in plan)):
                continue  # img2img shares txt2img's weights; the plan warms its model
            runner = runner_for(stage_type)
            item = StageItem(prompt="warm up", params=runner.warm_up_parameters())
            try:
                runner.run([item], name, self, _SilentHooks())
            except Exception:
                log.exception("warm-up of %s (%s) failed", name, stage_type)
        if self.profile.compiles:
            self._compile_plan(plan)

    def _compile_plan(self, plan: list[WarmUpCall]) -> None:
        """Compile the planned shapes, first loading what another instance stored for the same plan, then stop
        compiling (or, if compiling failed, run eagerly)."""
        torch.compiler.set_stance("default")  # a registry warmed up before may have set another stance
        shared = self._shared_compile_cache() if plan else None
        key = compile_cache_key(self.settings, self.profile, plan, self.device) if shared is not None else ""
        loaded = shared is not None and shared.load(key)
        compiled = self._compile_shapes(plan)
        torch.compiler.set_stance(SERVING_STANCE if compiled else EAGER_STANCE)
        if compiled and shared is not None and not loaded:
            shared.save(key)

    def _shared_compile_cache(self) -> SharedCompileCache | None:
        if self._blobs is None or not self.settings.results_bucket:
            return None
        return SharedCompileCache(self._blobs, self.settings.results_bucket)

    def _compile_shapes(self, plan: list[WarmUpCall]) -> bool:
        """Compile each planned shape; False when compiling failed (not for lack of memory for one shape)."""
        import torch._dynamo

        from gpu_worker.stages import StageItem, runner_for

        # Static shapes: one compiled graph per shape and module; more shapes than dynamo keeps by default.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(plan) + 8)
        runner = runner_for("txt2img")
        for number, call in enumerate(plan, start=1):
            shape = f"{call.model} at {call.width}x{call.height} for {call.images} images"
            started = time.monotonic()
            items = [StageItem(prompt="warm up", params=call.parameters()) for _ in range(call.images)]
            try:
                runner.run(items, call.model, self, _SilentHooks())
            except OutOfMemory:
                log.warning("not compiling %s: out of memory (such batches fail on this GPU anyway)", shape)
                continue
            except Exception:
                log.exception("compiling %s failed: every model runs eagerly", shape)
                return False
            log.info("compiled %s (%d/%d) in %.1f s", shape, number, len(plan), time.monotonic() - started)
        return True


def absent_components(source: str) -> dict[str, None]:
    """Components a saved pipeline left out (`[null, null]` in model_index.json, e.g. SD3 without its T5 encoder):
    diffusers wants them passed as None explicitly."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    return {name: None for name, value in entries.items() if value == [None, None]}


def check_family(name: str, family: str, pipeline_class: str) -> None:
    """Refuse weights of another family than configured: its parameters were validated by the configured one."""
    loaded = family_of_pipeline_class(pipeline_class)
    if loaded != family:
        raise RuntimeError(
            f"model {name!r} is configured as family {family!r} but its weights load as {pipeline_class}"
            f" (family {loaded or 'unknown'}); set its `family` in the deployment's models"
        )


class _SilentHooks:
    def on_step(self, step: int, steps: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False
