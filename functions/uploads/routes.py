"""`POST /uploads`: a presigned PUT for a prompt text or an input image (≤ 10 MiB) under the caller's prefix.

`upload_prefix` is imported on the first request: its module (the pipelines domain) brings in pynamodb and
botocore, which a cold start would otherwise load at import.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from functions.bound import current_settings
from functions.http import caller_id
from functions.openapi import responses
from shared.aws import client
from shared.errors import PayloadTooLarge

router = APIGatewayRouter()

ContentType = Literal["text/plain", "image/png", "image/jpeg", "image/webp"]
_EXTENSIONS = {"text/plain": "txt", "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class UploadRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    content_type: ContentType = Field(alias="contentType")
    size_bytes: int = Field(alias="sizeBytes", ge=1)


class Upload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    uri: str
    upload_url: str = Field(alias="uploadUrl")
    expires_in: int = Field(alias="expiresIn")


@router.post("/uploads", summary="A presigned PUT for an upload", responses=responses(201, "Created", 400, 413))
def create_upload(body: Annotated[UploadRequest, Body()]) -> Response[Upload]:
    from functions.pipelines.logic import upload_prefix
    from shared.storage import BlobStore

    settings = current_settings()
    if body.size_bytes > settings.upload_max_bytes:
        raise PayloadTooLarge(f"uploads are at most {settings.upload_max_bytes} bytes")
    key = f"{upload_prefix(caller_id(router))}{uuid.uuid4()}.{_EXTENSIONS[body.content_type]}"
    url = BlobStore(client("s3", settings)).presign_put(
        settings.uploads_bucket, key, body.content_type, settings.presign_ttl_s
    )
    upload = Upload(uri=f"s3://{settings.uploads_bucket}/{key}", uploadUrl=url, expiresIn=settings.presign_ttl_s)
    body_json: Any = upload.model_dump(by_alias=True)  # Response[Upload] documents the shape; the body is its JSON
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=body_json)
