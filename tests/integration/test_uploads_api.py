"""The uploads API over HTTP on the local gateway (API.md, "Uploads"): presigned PUTs under the caller's prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from shared.aws import client
from shared.settings import Settings
from shared.storage import S3Uri

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser

Users = Callable[..., "TestUser"]
MiB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _request_upload(api: httpx.Client, user: TestUser, content_type: str, size: int) -> httpx.Response:
    return api.post("/uploads", json={"contentType": content_type, "sizeBytes": size}, headers=user.headers)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", "a long prompt, é".encode()),
        ("image/png", PNG),
        ("image/jpeg", b"\xff\xd8\xff"),
        ("image/webp", b"RIFF"),
    ],
)
def test_upload_answers_201_with_a_presigned_put_under_the_callers_prefix(
    api: httpx.Client, new_user: Users, stack_env: Settings, content_type: str, data: bytes
) -> None:
    user = new_user()
    response = _request_upload(api, user, content_type, len(data))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"uri", "uploadUrl", "expiresIn", "uploadHeaders"}
    assert body["uploadHeaders"] == {"Content-Type": content_type, "Content-Length": str(len(data))}
    assert body["expiresIn"] == stack_env.presign_ttl_s
    location = S3Uri.parse(body["uri"])
    assert location.bucket == stack_env.uploads_bucket
    assert location.key.startswith(f"uploads/{user.user_id}/")
    assert body["uploadUrl"].startswith("http")

    stored = httpx.put(body["uploadUrl"], content=data, headers=body["uploadHeaders"])
    assert stored.status_code == 200, stored.text
    s3_object = client("s3", stack_env).get_object(Bucket=location.bucket, Key=location.key)
    assert s3_object["Body"].read() == data
    assert s3_object["ContentType"] == content_type


def test_each_upload_gets_its_own_uri(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    uris = {_request_upload(api, user, "text/plain", 10).json()["uri"] for _ in range(3)}
    assert len(uris) == 3


def test_ten_mib_is_allowed_and_one_byte_more_is_413(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    assert _request_upload(api, user, "image/png", 10 * MiB).status_code == 201
    too_large = _request_upload(api, user, "image/png", 10 * MiB + 1)
    assert too_large.status_code == 413, too_large.text
    assert too_large.json()["code"] == "PAYLOAD_TOO_LARGE"


INVALID_REQUESTS: list[dict[str, Any]] = [
    {"contentType": "application/pdf", "sizeBytes": 10},
    {"contentType": "text/html", "sizeBytes": 10},
    {"contentType": "image/svg+xml", "sizeBytes": 10},
    {"contentType": "", "sizeBytes": 10},
    {"contentType": "text/plain", "sizeBytes": 0},
    {"contentType": "text/plain", "sizeBytes": -1},
    {"contentType": "text/plain", "sizeBytes": "big"},
    {"contentType": "text/plain", "sizeBytes": "10"},
    {"contentType": "text/plain", "sizeBytes": True},
    {"contentType": "text/plain"},
    {"sizeBytes": 10},
    {"contentType": "text/plain", "sizeBytes": 10, "key": "uploads/someone-else/x.txt"},
]


def test_invalid_upload_requests_are_422(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    wrong = []
    for request_body in INVALID_REQUESTS:
        response = api.post("/uploads", json=request_body, headers=user.headers)
        if (response.status_code, response.json().get("code")) != (422, "VALIDATION_FAILED"):
            wrong.append((request_body, response.status_code, response.text))
    assert wrong == []


@pytest.mark.parametrize("raw", ["{oops", "[]"])
def test_malformed_upload_request_is_400(api: httpx.Client, new_user: Users, raw: str) -> None:
    headers = new_user().headers | {"Content-Type": "application/json"}
    response = api.post("/uploads", content=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_upload_without_a_valid_token_is_401(api: httpx.Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = api.post("/uploads", json={"contentType": "text/plain", "sizeBytes": 10}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_an_uploaded_prompt_can_be_a_stage_body(api: httpx.Client, new_user: Users) -> None:
    user = new_user()
    upload = _request_upload(api, user, "text/plain", 5).json()
    assert httpx.put(upload["uploadUrl"], content=b"hello", headers={"Content-Type": "text/plain"}).status_code == 200
    stage = {"type": "txt2txt", "inline": False, "body": upload["uri"], "parameters": {}}
    created = api.post("/pipelines", json={"name": "from an upload", "stages": [stage]}, headers=user.headers)
    assert created.status_code == 201, created.text
    assert created.json()["stages"] == [stage]
