"""In-memory stand-ins for the pipelines domain's collaborators (stores, S3), and upload builders, for unit tests."""

from __future__ import annotations

import heapq
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from functions.pagination import Page
from functions.pipelines.store import RatingOutcome, list_partition
from shared.errors import NotFound
from shared.models import PipelineRecord
from shared.uploads import Declaration, upload_key


def png(width: int, height: int) -> bytes:
    """The first bytes of a PNG of this size (signature and IHDR chunk): all the checks read."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def jpeg(width: int, height: int, metadata_bytes: int = 0) -> bytes:
    """SOI, an APP1 segment of `metadata_bytes` (split in 64 KiB segments), then a baseline frame header."""
    data = b"\xff\xd8"
    while metadata_bytes > 0:
        chunk = min(metadata_bytes, 65533)
        data += b"\xff\xe1" + struct.pack(">H", chunk + 2) + b"\x00" * chunk
        metadata_bytes -= chunk
    return data + b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x00" * 9 + b"\xff\xd9"


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 8
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBP"
        + b"VP8L"
        + struct.pack("<I", len(payload))
        + payload
    )


@dataclass
class FakeBlobs:
    """S3 objects as {(bucket, key): (bytes, content type)}; `uploads_bucket` holds uploads made with `upload`."""

    objects: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    ranges_read: list[tuple[str, int, int]] = field(default_factory=list)

    def upload(
        self, user_id: str, data: bytes, content_type: str, declared_size: int | None = None, bucket: str = "uploads"
    ) -> str:
        """Store `data` as an upload declared with `declared_size` (its real size by default); its s3:// URI."""
        key = upload_key(user_id, Declaration(content_type, declared_size or len(data)))
        self.objects[(bucket, key)] = (data, content_type)
        return f"s3://{bucket}/{key}"

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        if (bucket, key) not in self.objects:
            return None
        data, content_type = self.objects[(bucket, key)]
        return {"ContentLength": len(data), "ContentType": content_type}

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        if (bucket, key) not in self.objects:
            raise NotFound("no such object")
        self.ranges_read.append((key, start, length))
        return self.objects[(bucket, key)][0][start : start + length]

    def put_json(self, bucket: str, key: str, value: Any) -> None:
        self.objects[(bucket, key)] = (repr(value).encode(), "application/json")
        self.json = getattr(self, "json", {}) | {(bucket, key): value}

    def get_json(self, bucket: str, key: str) -> Any:
        stored = getattr(self, "json", {})
        if (bucket, key) not in stored:
            raise NotFound("no such object")
        return stored[(bucket, key)]

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        doomed = [k for k in self.objects if k[0] == bucket and k[1].startswith(prefix)]
        for k in doomed:
            del self.objects[k]
        getattr(self, "json", {}).pop((bucket, prefix), None)
        return len(doomed)


class FakePipelineStore:
    """Pipeline records in a dict, with the sharded list's semantics (newest first, strictly before a cursor)."""

    def __init__(self, display_names: dict[str, str] | None = None) -> None:
        self.records: dict[str, PipelineRecord] = {}
        self.display_names = display_names or {}
        self.vanish_on_delete = False  # another request deleted it between our read and our delete

    def get(self, pipeline_id: str) -> PipelineRecord | None:
        return self.records.get(pipeline_id)

    def create(self, record: PipelineRecord) -> None:
        assert record.list_partition == list_partition(record.pipeline_id)
        self.records[record.pipeline_id] = record

    def delete(self, pipeline_id: str) -> bool:
        if self.vanish_on_delete:
            self.records.pop(pipeline_id, None)
            return False
        return self.records.pop(pipeline_id, None) is not None

    def page_by_author(self, author: str, limit: int, start: dict[str, Any] | None) -> Page[PipelineRecord]:
        mine = sorted((r for r in self.records.values() if r.author == author), key=lambda r: r.sort_key, reverse=True)
        return Page(mine[:limit], None)

    def page_all(self, limit: int, before: str | None) -> tuple[list[PipelineRecord], bool]:
        older = [r for r in self.records.values() if before is None or r.sort_key < before]
        newest = heapq.nlargest(limit + 1, older, key=lambda r: r.sort_key)
        return newest[:limit], len(newest) > limit

    def display_name(self, user_id: str) -> str:
        return self.display_names.get(user_id, "")


class FakeRatingStore:
    """Ratings and totals in dicts; `outcomes` scripts what the next `rate` calls answer before they apply."""

    def __init__(self, pipelines: FakePipelineStore) -> None:
        self.pipelines = pipelines
        self.ratings: dict[tuple[str, str], int] = {}
        self.sums: dict[str, tuple[int, int]] = {}
        self.outcomes: list[RatingOutcome] = []
        self.attempts = 0

    def score(self, pipeline_id: str, user_id: str) -> int | None:
        return self.ratings.get((pipeline_id, user_id))

    def scores(self, pipeline_ids: list[str], user_id: str) -> dict[str, int]:
        return {p: self.ratings[(p, user_id)] for p in pipeline_ids if (p, user_id) in self.ratings}

    def totals(self, pipeline_ids: list[str], consistent: bool = False) -> dict[str, tuple[int, int]]:
        return {p: self.sums[p] for p in pipeline_ids if p in self.sums}

    def rate(self, pipeline_id: str, user_id: str, score: int, previous: int | None, at: str) -> RatingOutcome:
        self.attempts += 1
        if self.outcomes:
            return self.outcomes.pop(0)
        if pipeline_id not in self.pipelines.records:
            return RatingOutcome.PIPELINE_GONE
        if self.ratings.get((pipeline_id, user_id)) != previous:
            return RatingOutcome.CHANGED
        total, count = self.sums.get(pipeline_id, (0, 0))
        self.sums[pipeline_id] = (total + score - (previous or 0), count + (previous is None))
        self.ratings[(pipeline_id, user_id)] = score
        return RatingOutcome.APPLIED

    def delete_all(self, pipeline_id: str) -> None:
        self.ratings = {k: v for k, v in self.ratings.items() if k[0] != pipeline_id}
        self.sums.pop(pipeline_id, None)
