"""S3 access behind one small class: JSON and bytes in and out, presigned URLs, prefix deletion.

Every botocore error is translated here into a typed error of `shared.errors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import NotFound, ServiceUnavailable, TransientFailure

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[5:].partition("/")
        if not bucket or not key:
            raise ValueError(f"an s3:// URI needs a bucket and a key: {uri!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class StorageUnavailable(ServiceUnavailable, TransientFailure):
    """S3 failed in a way worth retrying (throttling, 5xx, network)."""


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return NotFound(f"{what} not found")
    return StorageUnavailable(f"storage error on {what}: {exc}")


class BlobStore:
    """S3 operations on any bucket; `s3` is a boto3 S3 client (see `shared.aws.client`)."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> S3Uri:
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{bucket}/{key}") from exc
        return S3Uri(bucket, key)

    def put_json(self, bucket: str, key: str, value: Any) -> S3Uri:
        body = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return self.put_bytes(bucket, key, body.encode(), "application/json")

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{bucket}/{key}") from exc

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the object's end); only what is asked for is transferred."""
        byte_range = f"bytes={start}-{start + length - 1}"
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key, Range=byte_range)
            return response["Body"].read()  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{bucket}/{key}") from exc

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.get_bytes(bucket, key))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when it does not exist."""
        try:
            return self._s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as exc:
            error = _translate(exc, f"s3://{bucket}/{key}")
            if isinstance(error, NotFound):
                return None
            raise error from exc

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many were deleted."""
        deleted = 0
        try:
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self._s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{bucket}/{prefix}") from exc
        return deleted

    def download_prefix(self, bucket: str, prefix: str, destination: Path) -> int:
        """Copy every object under `prefix` into `destination` (keeping relative paths); returns the count."""
        from s3transfer.manager import TransferManager  # parallel ranged GETs for large weights; only the worker

        count = 0
        try:
            with TransferManager(self._s3) as transfers:
                paginator = self._s3.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                    for item in page.get("Contents", []):
                        target = destination / item["Key"][len(prefix) :].lstrip("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        transfers.download(bucket, item["Key"], str(target)).result()
                        count += 1
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{bucket}/{prefix}") from exc
        return count

    def presign_get(self, bucket: str, key: str, expires_in: int) -> str:
        return self._s3.generate_presigned_url(  # type: ignore[no-any-return]
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
        )

    def presign_put(self, bucket: str, key: str, content_type: str, size_bytes: int, expires_in: int) -> str:
        """A PUT URL whose signature covers Content-Type and Content-Length: S3 takes exactly that object."""
        params = {"Bucket": bucket, "Key": key, "ContentType": content_type, "ContentLength": size_bytes}
        return self._s3.generate_presigned_url(  # type: ignore[no-any-return]
            "put_object", Params=params, ExpiresIn=expires_in
        )
