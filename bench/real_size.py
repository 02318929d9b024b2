"""A real-size Stable Diffusion pipeline with random weights, generated offline (no hub needed).

The UNet, VAE and CLIP text encoder have Stable Diffusion 1.5's shapes (about 1.07 billion parameters), so a
512x512 execution costs what it costs with the real weights; only the images are noise. The tokenizer is the
tiny models' in-memory byte-level CLIP tokenizer (the text encoder's vocabulary is sized to it).
DIR/real-sdxl is the same for SDXL base 1.0 (a 2.57-billion-parameter UNet, two text encoders) at 1024x1024.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REAL_SD = "real-sd"
REAL_SDXL = "real-sdxl"


def _clip_config(tokenizer: Any, hidden: int, layers: int, heads: int, act: str) -> Any:
    """A CLIP text encoder's shape (ViT-L: 768, 12, 12; OpenCLIP bigG: 1280, 32, 20) for the tiny vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        projection_dim=hidden,
        hidden_act=act,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
    )


def _stable_diffusion_vae(sample_size: int, scaling_factor: float = 0.18215) -> Any:
    """The VAE every Stable Diffusion up to SDXL shares the shape of (83.65 M parameters)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        scaling_factor=scaling_factor,
    )


def build_real_size_sd(out: Path, device: str | None = None) -> None:
    """Write a Stable Diffusion 1.5-shaped pipeline with random weights (fp16 safetensors) to `out`.

    The weights are initialised on `device` (default: CUDA where available, where it is much faster)."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from gpu_worker.tiny_models import _clip_tokenizer, sd_pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = _clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = _stable_diffusion_vae(512)
        text_encoder = CLIPTextModel(_clip_config(tokenizer, 768, 12, 12, "quick_gelu"))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = sd_pipeline(unet, vae, text_encoder, tokenizer, scheduler)
    pipeline.to(device="cpu", dtype=torch.float16, silence_dtype_warnings=True)
    pipeline.save_pretrained(out, safe_serialization=True)


def real_size_sdxl_parts(tokenizer: Any) -> dict[str, Any]:
    """SDXL base 1.0's UNet (about 2.57 billion parameters), VAE and two text encoders (CLIP ViT-L and OpenCLIP
    bigG), random weights, on the current torch device (`with torch.device(...)`)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = _stable_diffusion_vae(1024, scaling_factor=0.13025)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": CLIPTextModel(_clip_config(tokenizer, 768, 12, 12, "quick_gelu")),
        "text_encoder_2": CLIPTextModelWithProjection(_clip_config(tokenizer, 1280, 32, 20, "gelu")),
    }


def build_real_size_sdxl(out: Path, device: str | None = None) -> None:
    """Write an SDXL base 1.0-shaped pipeline with random weights (fp16 safetensors, about 7 GB) to `out`."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from gpu_worker.tiny_models import _clip_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    with torch.device(device):
        parts = real_size_sdxl_parts(_clip_tokenizer())
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipeline: Any = StableDiffusionXLPipeline(
        **parts, tokenizer=_clip_tokenizer(), tokenizer_2=_clip_tokenizer(), scheduler=scheduler
    )
    pipeline.to(device="cpu", dtype=torch.float16, silence_dtype_warnings=True)
    pipeline.save_pretrained(out, safe_serialization=True)


@dataclass(frozen=True)
class RealSizeModel:
    """A real-size random-weight model of the GPU bench: its directory name, family and native size."""

    name: str
    family: str
    size: int
    build: Callable[[Path], None]

    def ensure(self, models_dir: Path) -> Path:
        """Build DIR/<name> if it is missing (minutes: a few GB of weights); returns its directory."""
        target = Path(models_dir) / self.name
        if not (target / "model_index.json").exists():
            self.build(target)
        return target

    def env(self, models_dir: Path | str) -> dict[str, str]:
        """MODELS and DEFAULT_MODELS (shared.settings) naming this model as the image default."""
        source = str((Path(models_dir) / self.name).resolve())
        models = {self.name: {"kind": "diffusers", "family": self.family, "source": source}}
        defaults = {"txt2img": self.name, "img2img": self.name}
        return {"MODELS": json.dumps(models), "DEFAULT_MODELS": json.dumps(defaults)}


REAL_SIZE_MODELS = {
    "sd15": RealSizeModel(REAL_SD, "sd15", 512, lambda out: build_real_size_sd(out)),
    "sdxl": RealSizeModel(REAL_SDXL, "sdxl", 1024, lambda out: build_real_size_sdxl(out)),
}
