"""Family-specific parts of a diffusers call (the family table itself is shared.families, used by the API too).

The stage runners build the arguments every family takes (prompt, steps, guidance, size, generators) and add
`call_arguments(...)`: what only some families take. Parameters a family does not support never get here:
they are rejected with 422 when the pipeline is created or the execution submitted.
"""

from __future__ import annotations

from typing import Any

# Families whose img2img pipeline makes an image of the model's native size unless told the input's size.
_IMG2IMG_SIZED = frozenset({"sd3", "flux"})


def call_arguments(
    family: str, stage_type: str, params: dict[str, Any], image_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Extra keyword arguments of `family`'s pipeline call for a batch sharing `params` (its batch key's values)
    and, for img2img, one input image size (width, height)."""
    if family == "sdxl" and stage_type == "txt2img":
        # SDXL is conditioned on the original and target sizes and the crop: ask for an uncropped image of
        # exactly the requested size (diffusers' default too, stated here so a batch never depends on it).
        size = (int(params["height"]), int(params["width"]))
        return {"original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}
    if family in _IMG2IMG_SIZED and stage_type == "img2img" and image_size is not None:
        width, height = image_size
        return {"width": width, "height": height}
    return {}
