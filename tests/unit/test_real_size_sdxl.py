"""The GPU bench's real-size SDXL has SDXL base 1.0's shapes: built on the meta device, no memory needed."""

from __future__ import annotations

import torch

from bench.real_size import real_size_sdxl_parts
from gpu_worker.tiny_models import _clip_tokenizer


def test_the_real_size_sdxl_unet_and_vae_have_sdxl_base_parameter_counts() -> None:
    with torch.device("meta"):
        parts = real_size_sdxl_parts(_clip_tokenizer())
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    assert counts["unet"] == 2_567_463_684  # stabilityai/stable-diffusion-xl-base-1.0's UNet
    assert counts["vae"] == 83_653_863
    # The text encoders are CLIP ViT-L and OpenCLIP bigG with the tiny byte-level vocabulary (not 49408 tokens).
    assert parts["text_encoder"].config.hidden_size + parts["text_encoder_2"].config.hidden_size == 2048
