"""AWS clients built from settings (region, and the moto endpoint when running locally).

Clients are created on first use and cached per process, never at import, so tests control the endpoint.
They are botocore clients, the same ones boto3 hands out, made without importing boto3: boto3 pulls in
s3transfer, and every Lambda cold start would pay for it (bench: handler cold import). botocore itself is
imported on the first client too, for the same reason.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings import Settings


@lru_cache(maxsize=32)
def _client(service: str, region: str, endpoint_url: str | None, signature_v4: bool) -> Any:
    import botocore.session  # deferred to the first client: ~100 ms a cold import would pay otherwise
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    if signature_v4:
        config = config.merge(Config(signature_version="s3v4"))
    session = botocore.session.get_session()
    return session.create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def client(service: str, settings: Settings) -> Any:
    """A cached client of `service` for these settings (S3 signs with SigV4 for presigned URLs)."""
    return _client(service, settings.region, settings.aws_endpoint_url, service == "s3")
