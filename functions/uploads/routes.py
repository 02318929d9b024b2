"""`POST /uploads`: a presigned PUT for a prompt text or an input image (≤ 10 MiB) under the caller's prefix.

The URL's signature covers the declared Content-Type and Content-Length (`uploadHeaders` says what to send), and
the key records the declaration, which `shared.uploads` checks wherever the upload is used.
"""

from __future__ import annotations

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


class UploadRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    content_type: ContentType = Field(alias="contentType")
    size_bytes: int = Field(alias="sizeBytes", ge=1, strict=True)


class Upload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    uri: str
    upload_url: str = Field(alias="uploadUrl")
    expires_in: int = Field(alias="expiresIn")
    upload_headers: dict[str, str] = Field(alias="uploadHeaders")


@router.post("/uploads", summary="A presigned PUT for an upload", responses=responses(201, "Created", 400, 413))
def create_upload(body: Annotated[UploadRequest, Body()]) -> Response[Upload]:
    from shared.storage import BlobStore
    from shared.uploads import Declaration, upload_key

    settings = current_settings()
    if body.size_bytes > settings.upload_max_bytes:
        raise PayloadTooLarge(f"uploads are at most {settings.upload_max_bytes} bytes")
    key = upload_key(caller_id(router), Declaration(body.content_type, body.size_bytes))
    url = BlobStore(client("s3", settings)).presign_put(
        settings.uploads_bucket, key, body.content_type, body.size_bytes, settings.presign_ttl_s
    )
    headers = {"Content-Type": body.content_type, "Content-Length": str(body.size_bytes)}
    upload = Upload(
        uri=f"s3://{settings.uploads_bucket}/{key}",
        uploadUrl=url,
        expiresIn=settings.presign_ttl_s,
        uploadHeaders=headers,
    )
    answer: Response[Any] = Response(
        status_code=201, content_type=content_types.APPLICATION_JSON, body=upload.model_dump(by_alias=True)
    )
    return answer
