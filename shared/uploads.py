"""Uploads as declared and as stored: the declaration in the object's key, and the checks made where one is used.

`POST /uploads` signs a PUT for exactly the declared `Content-Type` and `Content-Length` and records both in
the key it issues (`uploads/<userId>/<uuid>-<sizeBytes>.<ext>`). S3 enforces the signature in AWS; wherever an
upload is used (a stage body, `variables.image`) `check_upload` compares the stored object with that declaration
and the limits, and reads an image's header (never the whole object) for its format and dimensions, so an object
that costs more than it said is refused with a 422 even where nothing enforced the signature.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import NotFound
from shared.stages import PROMPT_MAX_BYTES
from shared.storage import S3Uri

TEXT_TYPE = "text/plain"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
EXTENSIONS = {TEXT_TYPE: "txt", "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MAX_IMAGE_SIDE = 2048
MAX_IMAGE_PIXELS = 4_000_000  # 4 megapixels
# An image's format and size are read from its first bytes; a JPEG's frame header may follow metadata segments,
# which are skipped by their lengths with further small ranged reads.
HEADER_READ_BYTES = 64 * 1024
_JPEG_SEGMENTS_MAX = 256

_DECLARED_KEY = re.compile(r"^uploads/(?P<user>[^/]+)/[0-9a-f-]{36}-(?P<size>[1-9][0-9]{0,11})\.(?P<ext>[a-z]+)$")
# Keys issued before declarations were recorded (`<uuid>.<ext>`): their size was not signed, so only the limits
# and the type hold them (uploads expire after 30 days, and with them this form).
_UNDECLARED_KEY = re.compile(r"^uploads/[^/]+/[0-9a-f-]{36}\.(?P<ext>[a-z]+)$")
_TYPE_BY_EXTENSION = {ext: content_type for content_type, ext in EXTENSIONS.items()}


class UploadBlobs(Protocol):
    """What the checks need from `shared.storage.BlobStore`."""

    def head(self, bucket: str, key: str) -> dict[str, Any] | None: ...

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes: ...


class UploadRefused(Exception):
    """An upload that may not be used here; the message says why (it becomes a 422 detail)."""


@dataclass(frozen=True)
class Declaration:
    content_type: str
    size_bytes: int


def upload_prefix(user_id: str) -> str:
    """Where a user's uploads live in the uploads bucket; only these may be referenced by that user."""
    return f"uploads/{user_id}/"


def upload_key(user_id: str, declaration: Declaration) -> str:
    """A fresh key under the user's prefix that records the declared size and type."""
    return f"{upload_prefix(user_id)}{uuid.uuid4()}-{declaration.size_bytes}.{EXTENSIONS[declaration.content_type]}"


def declaration_of(key: str) -> Declaration | None:
    """The declaration recorded in an issued key; None for a key `POST /uploads` did not issue."""
    match = _DECLARED_KEY.fullmatch(key)
    if match is None or match["ext"] not in _TYPE_BY_EXTENSION:
        return None
    return Declaration(_TYPE_BY_EXTENSION[match["ext"]], int(match["size"]))


def own_upload(uri: str, user_id: str, uploads_bucket: str) -> S3Uri:
    """The location of one of the user's uploads; UploadRefused for anything else."""
    try:
        location = S3Uri.parse(uri)
    except ValueError:
        raise UploadRefused("must be an s3:// URI from POST /uploads") from None
    if location.bucket != uploads_bucket or not location.key.startswith(upload_prefix(user_id)):
        raise UploadRefused("must be one of your own uploads (from POST /uploads)")
    return location


def check_upload(blobs: UploadBlobs, location: S3Uri, allowed_types: tuple[str, ...], max_bytes: int) -> Declaration:
    """The stored object matches its declaration, one of `allowed_types` and `max_bytes`; else UploadRefused."""
    declared, legacy = declaration_of(location.key), _UNDECLARED_KEY.fullmatch(location.key)
    declared_type = declared.content_type if declared else _TYPE_BY_EXTENSION.get(legacy["ext"]) if legacy else None
    if declared_type is None:
        raise UploadRefused("not an upload from POST /uploads")
    if declared_type not in allowed_types:
        raise UploadRefused(f"must be an upload of type {' or '.join(allowed_types)}")
    head = blobs.head(location.bucket, location.key)
    if head is None:
        raise UploadRefused("the upload has not been uploaded yet")
    stored_size, stored_type = head.get("ContentLength"), head.get("ContentType")
    declared = declared or Declaration(declared_type, int(stored_size or 0))
    if stored_size != declared.size_bytes or stored_type != declared.content_type:
        raise UploadRefused(
            f"the stored object ({stored_size} bytes of {stored_type}) differs from its declaration "
            f"({declared.size_bytes} bytes of {declared.content_type})"
        )
    if declared.size_bytes > max_bytes:
        raise UploadRefused(f"at most {max_bytes} bytes")
    return declared


def read_prompt(blobs: UploadBlobs, location: S3Uri) -> str:
    """A prompt given by reference: a checked text/plain upload of at most the inline limit, as UTF-8 text."""
    declared = check_upload(blobs, location, (TEXT_TYPE,), PROMPT_MAX_BYTES)
    data = _ranges(blobs, location)(0, declared.size_bytes)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise UploadRefused("a prompt must be UTF-8 text") from None
    if "\x00" in text:
        raise UploadRefused("a prompt must not contain NUL characters")
    return text


def check_image(blobs: UploadBlobs, location: S3Uri, max_bytes: int) -> None:
    """An input image: a checked upload whose header shows its declared format within the pixel limits."""
    declared = check_upload(blobs, location, IMAGE_TYPES, max_bytes)
    header = _RangeReader(_ranges(blobs, location), declared.size_bytes)
    sniffed, width, height = image_dimensions(header.read)
    if sniffed != declared.content_type:
        raise UploadRefused(f"declared {declared.content_type} but the data is {sniffed or 'not an image'}")
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE and width * height <= MAX_IMAGE_PIXELS):
        raise UploadRefused(
            f"the image is {width}x{height}: at most {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS} pixels"
        )


def _ranges(blobs: UploadBlobs, location: S3Uri) -> Callable[[int, int], bytes]:
    def fetch(start: int, length: int) -> bytes:
        try:
            return blobs.get_range(location.bucket, location.key, start, length)
        except NotFound:  # deleted since its head was read
            raise UploadRefused("the upload has not been uploaded yet") from None

    return fetch


class _RangeReader:
    """Byte ranges of one object, fetched in blocks, never past its end."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int) -> None:
        self._fetch, self._size = fetch, size
        self._blocks: dict[int, bytes] = {}

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._size)
        data = b""
        while offset < end:
            block = offset // HEADER_READ_BYTES
            if block not in self._blocks:
                start = block * HEADER_READ_BYTES
                self._blocks[block] = self._fetch(start, min(HEADER_READ_BYTES, self._size - start))
            chunk = self._blocks[block][offset - block * HEADER_READ_BYTES : end - block * HEADER_READ_BYTES]
            if not chunk:
                break
            data += chunk
            offset += len(chunk)
        return data


Read = Callable[[int, int], bytes]


def image_dimensions(read: Read) -> tuple[str | None, int, int]:
    """(content type, width, height) from an image's header; (None, 0, 0) for anything not PNG, JPEG or WebP."""
    start = read(0, 32)
    if start.startswith(b"\x89PNG\r\n\x1a\n") and start[12:16] == b"IHDR" and len(start) >= 24:
        width, height = struct.unpack(">II", start[16:24])
        return "image/png", width, height
    if start.startswith(b"\xff\xd8"):
        width, height = _jpeg_dimensions(read)
        return ("image/jpeg", width, height) if width else (None, 0, 0)
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP" and len(start) >= 30:
        width, height = _webp_dimensions(start)
        return ("image/webp", width, height) if width else (None, 0, 0)
    return None, 0, 0


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg_dimensions(read: Read) -> tuple[int, int]:
    """Walk the segments after SOI to the first frame header (SOFn): its height and width; (0, 0) if none."""
    offset = 2
    for _ in range(_JPEG_SEGMENTS_MAX):
        marker = read(offset, 4)
        if len(marker) < 2 or marker[0] != 0xFF:
            return 0, 0
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind in _JPEG_STANDALONE:
            offset += 2
            continue
        if len(marker) < 4 or kind in {0xD9, 0xDA}:  # end of image, or scan data before any frame header
            return 0, 0
        (length,) = struct.unpack(">H", marker[2:4])
        if kind in _JPEG_FRAMES:
            frame = read(offset + 5, 4)
            if len(frame) < 4:
                return 0, 0
            height, width = struct.unpack(">HH", frame)
            return width, height
        offset += 2 + length
    return 0, 0


def _webp_dimensions(start: bytes) -> tuple[int, int]:
    chunk = start[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(start[24:27], "little"), 1 + int.from_bytes(start[27:30], "little")
    if chunk == b"VP8 " and start[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", start[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and start[20] == 0x2F:
        bits = int.from_bytes(start[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return 0, 0
