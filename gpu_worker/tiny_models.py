"""Tiny random-weight models, generated offline: what tests, benchmarks and the local stack run on.

`python -m gpu_worker.tiny_models --out DIR` writes DIR/tiny-sd (a Stable Diffusion pipeline: UNet, VAE, CLIP
text encoder and a byte-level CLIP tokenizer built in memory) and DIR/tiny-gpt2 (a GPT-2 causal LM with a BPE
tokenizer trained on a small built-in corpus). They load through the same code as real models
(`from_pretrained(dir, local_files_only=True)`). Weights come from fixed seeds, so the files are reproducible.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TINY_SD = "tiny-sd"
TINY_GPT2 = "tiny-gpt2"

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


def ensure_tiny_models(models_dir: Path) -> Path:
    """Build whichever tiny model is missing under `models_dir`; returns the directory."""
    models_dir = Path(models_dir)
    if not (models_dir / TINY_SD / "model_index.json").exists():
        build_tiny_sd(models_dir / TINY_SD)
    if not (models_dir / TINY_GPT2 / "config.json").exists():
        build_tiny_gpt2(models_dir / TINY_GPT2)
    return models_dir


def local_models_env(models_dir: Path | str) -> dict[str, str]:
    """MODELS and DEFAULT_MODELS (shared.settings) naming the tiny models under `models_dir`."""
    root = Path(models_dir).resolve()
    models = {
        TINY_SD: {"kind": "diffusers", "source": str(root / TINY_SD)},
        TINY_GPT2: {"kind": "causal-lm", "source": str(root / TINY_GPT2)},
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
