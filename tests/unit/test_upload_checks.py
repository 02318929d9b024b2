"""Upload declarations, the use-site checks, image headers, the presigned PUT's signed headers, hostile bodies."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from functions.request_body import MAX_DEPTH, body_problem
from shared import uploads
from shared.storage import BlobStore, S3Uri
from shared.uploads import Declaration, UploadRefused, check_image, declaration_of, image_dimensions, upload_key
from tests.unit.pipeline_fakes import FakeBlobs, jpeg, png, webp_lossless


def test_the_presigned_put_signs_content_length_and_content_type(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session
    from botocore.config import Config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", config=Config(signature_version="s3v4")
    )
    url = BlobStore(s3).presign_put("bucket", "uploads/u/k.txt", "text/plain", 1024, 60)
    signed = parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-length", "content-type"} <= set(signed)


def test_issued_keys_carry_their_declaration() -> None:
    key = upload_key("u1", Declaration("image/webp", 1234))
    assert key.startswith("uploads/u1/")
    assert key.endswith("-1234.webp")
    assert declaration_of(key) == Declaration("image/webp", 1234)
    for forged in ("uploads/u1/a.png", "uploads/u1/x-12.png", f"{key}.txt", key.replace("webp", "gif")):
        assert declaration_of(forged) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(640, 480), ("image/png", 640, 480)),
        (jpeg(800, 600), ("image/jpeg", 800, 600)),
        (jpeg(300, 200, metadata_bytes=200_000), ("image/jpeg", 300, 200)),  # frame header past the first read
        (webp_lossless(2048, 1024), ("image/webp", 2048, 1024)),
        (b"GIF89a" + b"\x00" * 40, (None, 0, 0)),
        (b"\xff\xd8\xff\xd9", (None, 0, 0)),  # a JPEG with no frame
        (b"", (None, 0, 0)),
    ],
)
def test_image_dimensions_come_from_the_header(data: bytes, expected: tuple[Any, int, int]) -> None:
    assert image_dimensions(lambda start, n: data[start : start + n]) == expected


def _stored_image(
    blobs: FakeBlobs, data: bytes, content_type: str = "image/png", declared_size: int | None = None
) -> S3Uri:
    return S3Uri.parse(blobs.upload("u1", data, content_type, declared_size))


@pytest.mark.parametrize(
    ("data", "content_type", "ok"),
    [
        (png(2048, 1952), "image/png", True),  # 3,997,696 pixels
        (png(2048, 1954), "image/png", False),  # 4,001,792 pixels: over 4 MP
        (png(2049, 8), "image/png", False),
        (png(0, 8), "image/png", False),
        (png(64, 64), "image/jpeg", False),  # declared JPEG, is PNG
        (jpeg(64, 64, metadata_bytes=100_000), "image/jpeg", True),
    ],
)
def test_images_are_checked_against_format_and_pixels(data: bytes, content_type: str, ok: bool) -> None:
    blobs = FakeBlobs()
    location = _stored_image(blobs, data, content_type)
    if ok:
        check_image(blobs, location, 10 * 1024 * 1024)
    else:
        with pytest.raises(UploadRefused):
            check_image(blobs, location, 10 * 1024 * 1024)


def test_only_the_header_of_a_large_image_is_read() -> None:
    blobs = FakeBlobs()
    location = _stored_image(blobs, png(64, 64) + b"\x00" * (5 * 1024 * 1024))
    check_image(blobs, location, 10 * 1024 * 1024)
    assert sum(length for _, _, length in blobs.ranges_read) <= uploads.HEADER_READ_BYTES


@pytest.mark.parametrize(
    "declared", [{"declared_size": 10}, {"declared_size": 11 * 1024 * 1024}], ids=["smaller", "over-limit"]
)
def test_an_object_that_differs_from_its_declaration_or_the_limit_is_refused(declared: dict[str, int]) -> None:
    blobs = FakeBlobs()
    data = png(8, 8) + b"\x00" * (11 * 1024 * 1024 - 33) if declared["declared_size"] > 100 else png(8, 8)
    location = _stored_image(blobs, data, declared_size=declared["declared_size"])
    with pytest.raises(UploadRefused):
        check_image(blobs, location, 10 * 1024 * 1024)


def test_a_missing_or_vanished_upload_is_refused() -> None:
    blobs = FakeBlobs()
    location = _stored_image(blobs, png(8, 8))
    del blobs.objects[(location.bucket, location.key)]
    with pytest.raises(UploadRefused, match="not been uploaded"):
        check_image(blobs, location, 1024)


# --- hostile request bodies ---


def _event(body: str | None, content_type: str | None = "application/json", b64: bool = False) -> dict[str, Any]:
    headers = {"content-type": content_type} if content_type else {}
    if b64 and body is not None:
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    return {"headers": headers, "body": body, "isBase64Encoded": b64}


def test_brackets_in_strings_are_not_nesting() -> None:
    assert body_problem(_event('{"a": "' + "[" * 100 + '", "b": [1, {"c": "\\"]"}]}')) is None


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (_event('{"a": 1}', "text/plain"), 415),
        (_event('{"a": 1}', None), 415),
        (_event('{"a": 1}', "application/json; charset=utf-8"), None),
        (_event('{"a": 1}', "Application/JSON"), None),
        (_event(None, "text/plain"), None),  # no body: nothing to refuse
        (_event("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)), 400),
        (_event("[" * MAX_DEPTH + "]" * MAX_DEPTH), None),
        (_event('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)), 400),
        (_event("[" * 100_000 + "]" * 100_000), 400),
        (_event("[" * 100_000), 400),
        (_event('"' + '\\"' * 100_000), None),  # unterminated string of escapes: malformed, left to the resolver
        (_event('{"a": "\\ud800"}'), 422),
        (_event('{"a": ["ok", {"\\udfff": 1}]}'), 422),
        (_event('{"a": "\\ud83d\\ude00"}'), None),  # a surrogate pair is one character
        (_event('{"a": "x\\u0000"}'), 422),
        (_event("{oops"), None),  # malformed JSON: the resolver's own 400
        (_event('{"a": 1}', b64=True), None),
        (
            {
                "headers": {"Content-Type": "application/json"},
                "body": base64.b64encode(b"\xff").decode(),
                "isBase64Encoded": True,
            },
            400,
        ),
    ],
)
def test_body_problems(event: dict[str, Any], status: int | None) -> None:
    problem = body_problem(event)
    assert (problem.status if problem else None) == status
    if problem is not None:
        json.dumps(problem.to_body())  # the answer itself is valid JSON text


def test_keys_issued_before_declarations_are_held_to_the_limits() -> None:
    blobs = FakeBlobs()
    key = "uploads/u1/0b9a7d1e-8c3f-4f39-9d0e-2b7f1f0c6a11"
    blobs.objects[("uploads", f"{key}.txt")] = (b"an old prompt", "text/plain")
    blobs.objects[("uploads", f"{key}.png")] = (png(4096, 64), "image/png")
    assert uploads.read_prompt(blobs, S3Uri("uploads", f"{key}.txt")) == "an old prompt"
    with pytest.raises(UploadRefused, match="pixels"):
        check_image(blobs, S3Uri("uploads", f"{key}.png"), 10 * 1024 * 1024)
    blobs.objects[("uploads", f"{key}.txt")] = (b"x" * 20_000, "text/plain")
    with pytest.raises(UploadRefused, match="at most"):
        uploads.read_prompt(blobs, S3Uri("uploads", f"{key}.txt"))
