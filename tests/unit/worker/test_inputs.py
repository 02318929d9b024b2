"""The worker's own input limits: images checked from their header before decoding, prompts bounded while
rendering, img2img inputs brought within the stage's size limits."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from gpu_worker.inputs import decode_image, render_bounded, stage_size, truncate_utf8
from shared.errors import BadInput
from shared.stages import PROMPT_MAX_BYTES


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a decompression bomb's first bytes), with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(14000, 14000), (3000, 100), (2048, 2049), (100000, 1)])
def test_an_image_over_the_limits_is_refused_from_its_header(size: tuple[int, int]) -> None:
    with pytest.raises(BadInput):
        decode_image(png_header_only(*size))


def test_not_an_image_or_a_format_not_allowed_is_bad_input() -> None:
    with pytest.raises(BadInput):
        decode_image(b"GIF89a not really")
    with pytest.raises(BadInput):
        decode_image(encoded(Image.new("RGB", (64, 64)), "GIF"))
    with pytest.raises(BadInput):
        decode_image(encoded(Image.new("RGB", (64, 64)), "PNG")[:60])  # truncated


def test_an_image_within_the_limits_is_decoded_to_rgb() -> None:
    image = decode_image(encoded(Image.new("RGBA", (96, 64), (1, 2, 3, 4)), "WEBP"))
    assert (image.mode, image.size) == ("RGB", (96, 64))


@pytest.mark.parametrize(
    ("given", "fitted"),
    [
        ((64, 64), (64, 64)),
        ((1280, 1280), (1024, 1024)),
        ((4096, 64), (1024, 64)),
        ((2048, 1000), (1024, 496)),
        ((100, 30), (96, 64)),
    ],
)
def test_img2img_inputs_are_brought_within_the_stage_limits(given: tuple[int, int], fitted: tuple[int, int]) -> None:
    assert stage_size(*given) == fitted


def test_a_large_input_image_is_resized_before_the_model_sees_it() -> None:
    assert decode_image(encoded(Image.new("RGB", (2000, 1500)), "JPEG")).size == (1024, 768)


def test_a_template_repeating_a_large_variable_stops_at_the_limit() -> None:
    template = "{{a}}" * 400  # 2 KiB of template, 6.5 MB if rendered
    with pytest.raises(BadInput, match="16384"):
        render_bounded(template, {"a": "x" * 16 * 1024}, None)


def test_a_rendered_prompt_at_the_limit_passes_and_one_byte_more_fails() -> None:
    assert len(render_bounded("{{a}}b", {"a": "x" * (PROMPT_MAX_BYTES - 1)}, None)) == PROMPT_MAX_BYTES
    with pytest.raises(BadInput):
        render_bounded("{{a}}bc", {"a": "x" * (PROMPT_MAX_BYTES - 1)}, None)


def test_previous_inserts_at_most_16_kib() -> None:
    rendered = render_bounded("{{previous}}", {}, "é" * PROMPT_MAX_BYTES)
    assert len(rendered.encode()) <= PROMPT_MAX_BYTES
    assert rendered == "é" * (PROMPT_MAX_BYTES // 2)


def test_unknown_names_still_raise_key_error() -> None:
    with pytest.raises(KeyError):
        render_bounded("{{nope}}", {}, None)
    with pytest.raises(KeyError):
        render_bounded("{{previous}}", {}, None)


def test_truncation_never_splits_a_character() -> None:
    assert truncate_utf8("aé", 2) == "a"
