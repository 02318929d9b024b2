"""The performance profile: how the worker runs its diffusion models on its device.

One setting picks it (PERFORMANCE_PROFILE, from the CDK context `gpuPerformanceProfile`): `auto` (the default)
is `fast` on CUDA and `plain` on a CPU.

- plain: CUDA fp16 with SDPA attention (diffusers' default on torch 2) and a channels-last denoiser; on a CPU,
  float32 and nothing else (what the tests and the local stack run).
- fast: bf16, SDPA, channels-last denoiser and VAE, fused QKV projections, and `torch.compile` of the denoiser
  and the VAE decoder: on CUDA in mode max-autotune, which records CUDA graphs, one per shape. Shapes are
  static (`dynamic=False`): at warm-up the worker compiles each configured size for 1 to max-batch-size
  images (`warm_up_plan`), then switches the compiler to `eager_on_recompile`, so a shape nobody warmed runs
  eagerly (correct, slower) instead of stalling a batch for minutes of compilation; if compiling fails at
  warm-up, to `force_eager`, so the worker serves at the plain speed rather than not at all. Inductor's and Triton's
  caches live in COMPILE_CACHE_DIR on the instance's disk, so a restarted worker loads its kernels instead of
  compiling them again, and the first instance to compile stores its artifacts in S3 (`SharedCompileCache`,
  the results bucket's `compile-cache/`, keyed by everything the kernels depend on), so later instances load
  them instead of compiling at their first boot. A model with LoRA adapters is neither fused (the fused
  projection would bypass the adapters on to_q/to_k/to_v) nor compiled (switching adapters would recompile).

On a CPU, `fast` (only when asked for) compiles in inductor's default mode, in float32: the tests use it to
check the compile path, the cache and the warm-up plan without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from shared.errors import NotFound
from shared.families import family_named
from shared.settings import WorkerSettings
from shared.storage import BlobStore

log = logging.getLogger(__name__)

# The compiler's stance once the warm-up compiled every planned shape (torch.compiler.set_stance), and once
# compiling failed there (a broken toolchain must not fail every execution: the compiled modules run eagerly).
SERVING_STANCE = "eager_on_recompile"
EAGER_STANCE = "force_eager"
# The txt2img stage's default guidance (API.md): above 1, so the warm-up compiles the guided (doubled) batch.
DEFAULT_GUIDANCE = 7.5


@dataclass(frozen=True)
class PerformanceProfile:
    name: str  # plain | fast
    dtype: str  # a torch dtype's name: float16, bfloat16, float32
    channels_last: bool
    fuse_qkv: bool
    compile_mode: str | None  # torch.compile's mode; None: eager

    @property
    def compiles(self) -> bool:
        return self.compile_mode is not None

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


PROFILES: dict[tuple[str, str], PerformanceProfile] = {
    ("cuda", "plain"): PerformanceProfile("plain", "float16", channels_last=True, fuse_qkv=False, compile_mode=None),
    ("cuda", "fast"): PerformanceProfile(
        "fast", "bfloat16", channels_last=True, fuse_qkv=True, compile_mode="max-autotune"
    ),
    ("cpu", "plain"): PerformanceProfile("plain", "float32", channels_last=False, fuse_qkv=False, compile_mode=None),
    ("cpu", "fast"): PerformanceProfile("fast", "float32", channels_last=True, fuse_qkv=True, compile_mode="default"),
}


def resolve_device(setting: str) -> str:
    """`auto`: CUDA where there is a GPU, else the CPU."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def performance_profile(setting: str, device: str) -> PerformanceProfile:
    """The profile `setting` (auto | plain | fast) names on `device` (cuda, cpu; other devices run plain)."""
    name = ("fast" if device == "cuda" else "plain") if setting == "auto" else setting
    return PROFILES[("cuda" if device == "cuda" else "cpu", name)]


def profile_of(settings: WorkerSettings) -> PerformanceProfile:
    return performance_profile(settings.performance_profile, resolve_device(settings.device))


def for_this_gpu(profile: PerformanceProfile) -> PerformanceProfile:
    """bf16 needs an Ampere or newer GPU (A10G, L4, A100, H100: the fleet's); fp16 on older ones (T4, V100)."""
    import torch

    if profile.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return replace(profile, dtype="float16")
    return profile


def use_compile_cache(directory: str | os.PathLike[str], device: str) -> None:
    """Keep inductor's FX-graph and AOT-autograd caches and Triton's kernels under `directory` (before the first
    compile), and set inductor's options for diffusion models on CUDA (diffusers' fast-diffusion tutorial)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root)
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    if device == "cuda":
        inductor_config.conv_1x1_as_mm = True
        inductor_config.coordinate_descent_tuning = True
        inductor_config.coordinate_descent_check_all_directions = True
        inductor_config.epilogue_fusion = False


def speed_up(pipeline: Any, profile: PerformanceProfile, *, has_loras: bool) -> list[str]:
    """Apply `profile` to a loaded diffusers pipeline (already on its device, in the profile's dtype); returns
    what it applied, for the log and the tests."""
    import torch

    applied: list[str] = []
    denoiser = pipeline.unet if hasattr(pipeline, "unet") else pipeline.transformer
    if profile.channels_last:
        denoiser.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
        applied.append("channels-last")
    if has_loras:
        return applied  # fused projections would bypass the adapters; switching adapters would recompile
    if profile.fuse_qkv:
        try:
            if hasattr(pipeline, "fuse_qkv_projections"):  # UNet pipelines: the UNet's and the VAE's attention
                pipeline.fuse_qkv_projections()
            else:
                denoiser.fuse_qkv_projections()
            applied.append("fused-qkv")
        except ValueError as exc:  # attention this diffusers version cannot fuse
            log.warning("not fusing QKV projections of %s: %s", type(pipeline).__name__, exc)
    if profile.compile_mode is not None:
        # In place (nn.Module.compile): the pipeline and img2img's from_pipe keep seeing the model classes.
        denoiser.compile(mode=profile.compile_mode, fullgraph=True, dynamic=False)
        pipeline.vae.decoder.compile(mode=profile.compile_mode, fullgraph=True, dynamic=False)
        applied.append(f"compiled:{profile.compile_mode}")
    return applied


@dataclass(frozen=True)
class WarmUpCall:
    """One compiled shape: `images` images of width x height from `model`, with classifier-free guidance."""

    model: str
    width: int
    height: int
    images: int
    guidance_scale: float

    def parameters(self, steps: int = 2) -> dict[str, Any]:
        """One item's txt2img parameters (the call batches `images` items)."""
        size = {"width": self.width, "height": self.height}
        return {"steps": steps, **size, "guidanceScale": self.guidance_scale, "numImages": 1}


def warm_up_plan(settings: WorkerSettings) -> list[WarmUpCall]:
    """The shapes the fast profile compiles at warm-up: for the default txt2img model, each WARM_UP_SIZES entry
    (by default the model's default size, else its family's native one) for 1 to MAX_BATCH_SIZE images."""
    model = settings.default_models.get("txt2img")
    if model is None or model not in settings.models:
        return []
    sizes = settings.warm_up_size_pairs() or [default_size(settings, model)]
    guidance = float(settings.models[model].defaults.get("guidanceScale", DEFAULT_GUIDANCE))
    return [
        WarmUpCall(model, width, height, images, guidance)
        for width, height in sizes
        for images in range(1, settings.max_batch_size + 1)
    ]


def default_size(settings: WorkerSettings, model: str) -> tuple[int, int]:
    spec = settings.models[model]
    native = family_named(spec.family).native_size
    return int(spec.defaults.get("width", native)), int(spec.defaults.get("height", native))


def compile_cache_key(
    settings: WorkerSettings, profile: PerformanceProfile, plan: list[WarmUpCall], device: str
) -> str:
    """What compiled kernels depend on: torch/CUDA/diffusers versions, the GPU, the model's weights (by source),
    the profile and the planned shapes. Instances that agree on all of it share their compiled artifacts."""
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    capability = list(torch.cuda.get_device_capability(0)) if device == "cuda" else []
    facts = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "gpu": gpu,
        "capability": capability,
        "models": {call.model: settings.models[call.model].source for call in plan},
        "profile": asdict(profile),
        "shapes": [asdict(call) for call in plan],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


class SharedCompileCache:
    """Compiled artifacts (torch.compiler.save_cache_artifacts: inductor's graphs, autotuning results, Triton
    kernels) in S3 under the results bucket's `compile-cache/`, so an instance that boots after the first one
    loads what that one compiled instead of compiling each shape again (minutes each with max-autotune)."""

    PREFIX = "compile-cache/"

    def __init__(self, blobs: BlobStore, bucket: str) -> None:
        self._blobs = blobs
        self._bucket = bucket

    def _key(self, key: str) -> str:
        return f"{self.PREFIX}{key}.bin"

    def load(self, key: str) -> bool:
        """Load the artifacts stored under `key` into this process's caches; False when there are none."""
        import torch

        try:
            data = self._blobs.get_bytes(self._bucket, self._key(key))
        except NotFound:
            return False
        except Exception as exc:  # compiling works without it
            log.warning("could not read the shared compile cache: %s", exc)
            return False
        try:
            torch.compiler.load_cache_artifacts(data)
        except Exception as exc:
            log.warning("ignoring the shared compile cache %s: %s", key, exc)
            return False
        log.info("loaded %d bytes of compiled artifacts from the shared compile cache", len(data))
        return True

    def save(self, key: str) -> None:
        """Store this process's compiled artifacts under `key`."""
        import torch

        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return
        data, _info = saved
        try:
            self._blobs.put_bytes(self._bucket, self._key(key), data, "application/octet-stream")
        except Exception as exc:
            log.warning("could not write the shared compile cache: %s", exc)
            return
        log.info("stored %d bytes of compiled artifacts in the shared compile cache", len(data))
