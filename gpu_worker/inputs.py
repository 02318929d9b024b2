"""The worker's own checks of what a request brings, behind the API's (API.md, "Inputs that cost more than
they say"): no input may cost the worker more than its limits, whatever reached the queue.

- an input image: PNG, JPEG or WebP, at most 2048 pixels a side and 4 megapixels, read from its header before
  anything is decoded (Pillow's own bomb limit set to the same), then brought within the stage's size limits
  (64 to 1024 pixels a side, multiples of 8) so the model never encodes more than a txt2img stage may produce;
- a prompt by reference: at most 16 KiB, known from the object's size before it is read;
- a rendered prompt: at most 16 KiB, `{{previous}}` inserting at most 16 KiB (see `render_bounded`).
Every violation is `BadInput`: the execution fails with BAD_INPUT and the worker goes on.
"""

from __future__ import annotations

import io
from typing import Any

from shared.errors import BadInput
from shared.stages import PREVIOUS, PROMPT_MAX_BYTES, TEMPLATE_PATTERN

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
IMAGE_MAX_SIDE = 2048
IMAGE_MAX_PIXELS = 4 * 1024 * 1024
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # an upload's own cap (settings.upload_max_bytes' default)
STAGE_MIN_SIDE, STAGE_MAX_SIDE, STAGE_SIDE_MULTIPLE = 64, 1024, 8  # txt2img's width/height limits


def _pillow() -> Any:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = IMAGE_MAX_PIXELS  # above it Pillow warns, above twice it raises: both are refused
    return Image


def decode_image(data: bytes) -> Any:
    """An RGB PIL image from an upload's bytes, checked from its header first; raises BadInput."""
    if len(data) > IMAGE_MAX_BYTES:
        raise BadInput(f"variables.image is larger than {IMAGE_MAX_BYTES} bytes")
    image_module = _pillow()
    try:
        # open() reads the header only (and raises DecompressionBombError far above the limit); the size is
        # checked before load() decodes a pixel, so Pillow's warning between 1x and 2x its limit cannot be reached.
        image = image_module.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS))
        check_image_header(image.format, *image.size)
        image.load()
        return fit_to_stage(image.convert("RGB"))
    except BadInput:
        raise
    except Exception as exc:  # DecompressionBombError/Warning, truncated or corrupt data, anything Pillow raises
        raise BadInput(f"variables.image is not an image within the limits: {type(exc).__name__}") from exc


def check_image_header(image_format: str | None, width: int, height: int) -> None:
    if image_format not in IMAGE_FORMATS:
        raise BadInput(f"variables.image must be PNG, JPEG or WebP, not {image_format}")
    if max(width, height) > IMAGE_MAX_SIDE or width * height > IMAGE_MAX_PIXELS:
        raise BadInput(f"variables.image is {width}x{height}: at most {IMAGE_MAX_SIDE} pixels a side and 4 megapixels")


def stage_size(width: int, height: int) -> tuple[int, int]:
    """The size an img2img input is brought to: the longer side at most 1024, each side a multiple of 8 in
    64..1024, the aspect ratio kept as far as those allow."""
    scale = min(1.0, STAGE_MAX_SIDE / max(width, height))

    def side(value: int) -> int:
        rounded = round(value * scale / STAGE_SIDE_MULTIPLE) * STAGE_SIDE_MULTIPLE
        return max(STAGE_MIN_SIDE, min(STAGE_MAX_SIDE, rounded))

    return side(width), side(height)


def fit_to_stage(image: Any) -> Any:
    size = stage_size(*image.size)
    if size == tuple(image.size):
        return image
    return image.resize(size, _pillow().Resampling.LANCZOS)


def check_prompt_object_size(size_bytes: int, what: str) -> None:
    if size_bytes > PROMPT_MAX_BYTES:
        raise BadInput(f"{what} is {size_bytes} bytes: a prompt is at most {PROMPT_MAX_BYTES} bytes")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def render_bounded(
    template: str, variables: dict[str, str], previous: str | None, *, max_bytes: int = PROMPT_MAX_BYTES
) -> str:
    """`shared.stages.render_template` that stops as soon as the result would pass `max_bytes` of UTF-8
    (BadInput), so a small template repeating a large variable costs nothing; `{{previous}}` inserts at most
    `max_bytes` of the previous stage's text. A name with no value raises KeyError, as render_template does."""
    total = 0
    pieces: list[str] = []
    position = 0
    for match in TEMPLATE_PATTERN.finditer(template):
        name = match.group(1)
        if name == PREVIOUS:
            if previous is None:
                raise KeyError(PREVIOUS)
            value = truncate_utf8(previous, max_bytes)
        else:
            value = variables[name]
        for piece in (template[position : match.start()], value):
            total += len(piece.encode("utf-8"))
            if total > max_bytes:
                raise BadInput(f"the prompt after its templates are filled is over {max_bytes} bytes")
            pieces.append(piece)
        position = match.end()
    tail = template[position:]
    if total + len(tail.encode("utf-8")) > max_bytes:
        raise BadInput(f"the prompt after its templates are filled is over {max_bytes} bytes")
    pieces.append(tail)
    return "".join(pieces)
