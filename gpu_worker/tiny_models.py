"""Tiny random-weight models, generated offline: what tests, benchmarks and the local stack run on.

`python -m gpu_worker.tiny_models --out DIR` writes DIR/tiny-sd (a Stable Diffusion pipeline: UNet, VAE, CLIP
text encoder and a byte-level CLIP tokenizer built in memory), DIR/tiny-gpt2 (a GPT-2 causal LM with a BPE
tokenizer trained on a small built-in corpus), DIR/tiny-sdxl (SDXL's architecture: two text encoders, size
conditioning), DIR/tiny-sd3 (SD3's MMDiT transformer and flow matching, without the optional T5 encoder),
DIR/tiny-flux (FLUX.1's transformer with CLIP and T5 encoders), DIR/tiny-chat (tiny-gpt2 with a chat
template, an "instruct" model) and DIR/tiny-sd-lora (a LoRA adapter for tiny-sd, served as its "ink-style").
They load through the same code as real models (`from_pretrained(dir, local_files_only=True)`). Weights come
from fixed seeds, so the files are reproducible.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TINY_SD = "tiny-sd"
TINY_GPT2 = "tiny-gpt2"
TINY_SDXL = "tiny-sdxl"
TINY_SD3 = "tiny-sd3"
TINY_FLUX = "tiny-flux"
TINY_CHAT = "tiny-chat"  # tiny-gpt2's weights with a chat template on its tokenizer
TINY_LORA = "tiny-sd-lora"  # a LoRA adapter for tiny-sd's UNet, served as tiny-sd's "ink-style"
TINY_LORA_NAME = "ink-style"

_CORPUS = [
    "a photograph of a red fox in the snow at dawn",
    "an oil painting of a lighthouse on a rocky coast",
    "a watercolor of a cat sleeping on a windowsill",
    "a futuristic city skyline at night with neon lights",
    "a bowl of ripe peaches on a wooden table",
    "a mountain lake reflecting pine trees and clouds",
    "portrait of an old sailor with a white beard",
    "a small robot reading a book in a library",
    "the quick brown fox jumps over the lazy dog",
    "describe a scene: a garden full of sunflowers",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-character map, the alphabet of byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes], strict=True))


def _clip_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [f"{c}</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def sd_pipeline(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any) -> Any:
    """A Stable Diffusion pipeline of these parts, without safety checker (the models here are random)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
    )
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    sd_pipeline(unet, vae, text_encoder, tokenizer, scheduler).save_pretrained(out, safe_serialization=True)


def build_tiny_gpt2(out: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast  # type: ignore[attr-defined]

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=256)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=256,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _clip_text_config(tokenizer: Any, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=projection_dim,
    )


def _tiny_vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        **extra,
    )


def build_tiny_sdxl(out: Path) -> None:
    """SDXL's shape in miniature: a UNet with text-time (size) conditioning and two CLIP text encoders."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size values + the pooled text embedding
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
    )
    tokenizer = _clip_tokenizer()
    pipeline: Any = StableDiffusionXLPipeline(
        unet=unet,
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_clip_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=_clip_tokenizer(),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading"
        ),
    )
    pipeline.save_pretrained(out, safe_serialization=True)


def build_tiny_sd3(out: Path) -> None:
    """SD3's shape in miniature: an MMDiT transformer, flow matching, two CLIP encoders (no T5, as SD3 allows)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,  # both encoders' projections, concatenated
        out_channels=4,
        pos_embed_max_size=256,  # up to 1024² images at this VAE's factor 2 and patch 2
    )
    tokenizer = _clip_tokenizer()
    pipeline: Any = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(_clip_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(tokenizer)),
        text_encoder_3=None,
        tokenizer=tokenizer,
        tokenizer_2=_clip_tokenizer(),
        tokenizer_3=None,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipeline.save_pretrained(out, safe_serialization=True)


def _t5_tokenizer() -> Any:
    """A T5 tokenizer (SentencePiece-style Unigram over single characters) built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Tokenizer

    symbols = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(symbol, -1.0) for symbol in symbols]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    return T5Tokenizer(tokenizer_object=tokenizer, extra_ids=0, model_max_length=512, **special)


def build_tiny_flux(out: Path) -> None:
    """FLUX.1's shape in miniature: a double- and single-stream transformer, a CLIP and a T5 text encoder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's width
        pooled_projection_dim=32,  # CLIP's pooled output
        axes_dims_rope=(4, 4, 8),
    )
    clip_tokenizer, t5_tokenizer = _clip_tokenizer(), _t5_tokenizer()
    t5 = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=32,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
    )
    pipeline: Any = FluxPipeline(
        transformer=transformer,
        vae=_tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModel(_clip_text_config(clip_tokenizer)),
        tokenizer=clip_tokenizer,
        text_encoder_2=T5EncoderModel(t5),
        tokenizer_2=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipeline.save_pretrained(out, safe_serialization=True)


# A ChatML-style template: what instruct models' tokenizers carry in tokenizer_config.json.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat(out: Path, gpt2_dir: Path) -> None:
    """tiny-gpt2 as an instruct model: the same weights, its tokenizer given a chat template."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(gpt2_dir, out, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)


def build_tiny_lora(out: Path, sd_dir: Path) -> None:
    """A random LoRA on tiny-sd's UNet attention, saved as diffusers' `save_lora_weights` writes real ones."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = StableDiffusionPipeline.from_pretrained(
        sd_dir, safety_checker=None, requires_safety_checker=False, local_files_only=True
    ).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter); a visible one needs weights
                parameter.normal_(std=0.5)
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )


def _builders(models_dir: Path) -> dict[str, tuple[str, Any]]:
    """Each tiny model: (the file whose presence says it is built, its builder); in build order."""
    return {
        TINY_SD: ("model_index.json", build_tiny_sd),
        TINY_GPT2: ("config.json", build_tiny_gpt2),
        TINY_SDXL: ("model_index.json", build_tiny_sdxl),
        TINY_SD3: ("model_index.json", build_tiny_sd3),
        TINY_FLUX: ("model_index.json", build_tiny_flux),
        TINY_CHAT: ("tokenizer_config.json", lambda out: build_tiny_chat(out, models_dir / TINY_GPT2)),
        TINY_LORA: ("pytorch_lora_weights.safetensors", lambda out: build_tiny_lora(out, models_dir / TINY_SD)),
    }


def missing_tiny_models(models_dir: Path) -> list[str]:
    models_dir = Path(models_dir)
    return [name for name, (marker, _) in _builders(models_dir).items() if not (models_dir / name / marker).exists()]


def ensure_tiny_models(models_dir: Path) -> Path:
    """Build whichever tiny model is missing under `models_dir`; returns the directory."""
    models_dir = Path(models_dir)
    builders = _builders(models_dir)
    for name in missing_tiny_models(models_dir):
        builders[name][1](models_dir / name)
    return models_dir


def local_models_env(models_dir: Path | str) -> dict[str, str]:
    """MODELS and DEFAULT_MODELS (shared.settings) naming the tiny models under `models_dir`."""
    root = Path(models_dir).resolve()
    models = {
        TINY_SD: {"kind": "diffusers", "source": str(root / TINY_SD), "loras": {TINY_LORA_NAME: str(root / TINY_LORA)}},
        TINY_GPT2: {"kind": "causal-lm", "source": str(root / TINY_GPT2)},
        TINY_SDXL: {"kind": "diffusers", "family": "sdxl", "source": str(root / TINY_SDXL)},
        TINY_SD3: {"kind": "diffusers", "family": "sd3", "source": str(root / TINY_SD3)},
        TINY_FLUX: {"kind": "diffusers", "family": "flux", "source": str(root / TINY_FLUX)},
        TINY_CHAT: {"kind": "causal-lm", "chat": True, "source": str(root / TINY_CHAT)},
    }
    defaults = {"txt2img": TINY_SD, "img2img": TINY_SD, "txt2txt": TINY_GPT2}
    return {"MODELS": json.dumps(models), "DEFAULT_MODELS": json.dumps(defaults)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the models into")
    args = parser.parse_args(argv)
    ensure_tiny_models(args.out)
    print(f"tiny models ready in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
