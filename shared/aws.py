"""AWS clients built from settings (region, and the moto endpoint when running locally).

Clients are created on first use and cached per process, never at import, so tests control the endpoint.
They are botocore clients, the same ones boto3 hands out, made without importing boto3: boto3 pulls in
s3transfer, and every Lambda cold start would pay for it (bench: handler cold import).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import botocore.session
from botocore.config import Config

from shared.settings import Settings

_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@lru_cache(maxsize=32)
def _client(service: str, region: str, endpoint_url: str | None, signature_v4: bool) -> Any:
    config = _CONFIG.merge(Config(signature_version="s3v4")) if signature_v4 else _CONFIG
    session = botocore.session.get_session()
    return session.create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def client(service: str, settings: Settings) -> Any:
    """A cached client of `service` for these settings (S3 signs with SigV4 for presigned URLs)."""
    return _client(service, settings.region, settings.aws_endpoint_url, service == "s3")
