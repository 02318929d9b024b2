"""LoRA adapters (the `loras` stage parameter): the set a batch runs with, and switching a pipeline to it.

Adapters are configured per model in the deployment (`ModelSource.loras`: name -> local path or s3:// prefix),
loaded into the model's pipeline on first use (with diffusers' PEFT backend) and kept; each batch then activates
exactly its own set with its scales. Items with different sets never share a batch (their batch keys differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LoraSet = tuple[tuple[str, float], ...]


def lora_set(loras: list[dict[str, Any]] | None) -> LoraSet:
    """The adapters and scales of a `loras` parameter, in a canonical (hashable, order-free) form."""
    return tuple(sorted((str(lora["name"]), float(lora.get("scale", 1.0))) for lora in loras or []))


def load_adapter(pipeline: Any, path: Path, adapter_name: str) -> None:
    """Load a LoRA from a .safetensors file or a directory holding one (as `save_lora_weights` writes)."""
    if path.is_file():
        pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter_name)
    else:
        pipeline.load_lora_weights(str(path), adapter_name=adapter_name)


def activate(pipeline: Any, wanted: LoraSet) -> None:
    """Make `wanted` the pipeline's active adapters (none: every loaded adapter off)."""
    if not wanted:
        pipeline.disable_lora()
        return
    pipeline.enable_lora()
    pipeline.set_adapters([name for name, _ in wanted], adapter_weights=[scale for _, scale in wanted])
