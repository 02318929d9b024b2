"""AWS clients built from settings (region, and the moto endpoint when running locally).

One client per AWS service per process, shared by every store, record and queue of that process (pynamodb's
records use the same DynamoDB client, `shared.models`). `client()` hands out a stand-in that makes the real
client on its first use, not when a store is built: a request that never sends to SQS never pays for an SQS
client (about 40 ms each, most of a first request). Nothing is made at import, so tests control the endpoint.
They are botocore clients, the same ones boto3 hands out, made from one botocore session
without importing boto3: boto3 pulls in s3transfer, and every Lambda cold start would pay for it (bench: handler
cold import). botocore itself is imported on the first client too, for the same reason.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings import CommonSettings

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _session() -> Any:
    """The process's botocore session: its loaders (service models, endpoints) are read once for all clients."""
    import botocore.session  # deferred to the first client: ~100 ms a cold import would pay otherwise

    return botocore.session.get_session()


@lru_cache(maxsize=32)
def _client(service: str, region: str, endpoint_url: str | None, signature_v4: bool) -> Any:
    from botocore.config import Config

    config = Config(
        retries={"mode": "adaptive", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,  # one client serves every thread of the process (the worker's I/O overlaps)
    )
    if signature_v4:
        config = config.merge(Config(signature_version="s3v4"))
    return _session().create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)


class _OnFirstUse:
    """Stands for a botocore client and makes it on the first attribute used (a call, `meta`, `exceptions`)."""

    def __init__(self, service: str, region: str, endpoint_url: str | None) -> None:
        self._key = (service, region, endpoint_url, service == "s3")

    def __getattr__(self, name: str) -> Any:
        if name == "_key" or name.startswith("__"):  # not set yet (copy, pickle): not the client's to answer
            raise AttributeError(name)
        with _lock:  # botocore clients are thread-safe once made; making two at once is not
            real = _client(*self._key)
        return getattr(real, name)

    def __repr__(self) -> str:
        return f"<{self._key[0]} client of {self._key[1]}, made on first use>"


@lru_cache(maxsize=32)
def _stand_in(service: str, region: str, endpoint_url: str | None) -> _OnFirstUse:
    return _OnFirstUse(service, region, endpoint_url)


def client(service: str, settings: CommonSettings) -> Any:
    """The process's client of `service` for these settings (S3 signs with SigV4 for presigned URLs)."""
    return _stand_in(service, settings.region, settings.aws_endpoint_url)


def clients_made() -> int:
    """How many botocore clients this process has made (the cold-start checks count them)."""
    return _client.cache_info().currsize
