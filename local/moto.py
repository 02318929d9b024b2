"""A moto server on loopback (SQS, DynamoDB, S3), started in this process on a free port."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from moto.server import ThreadedMotoServer

# DynamoDB applies each write (and each transaction) atomically; moto's server runs requests in threads and does
# read-modify-write in Python, so two concurrent ADDs on one item can lose one. One lock around moto's write
# operations makes it as atomic as DynamoDB (concurrency tests, and the local stack, rely on that).
_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_dynamodb_write_lock = threading.RLock()


def _atomic(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _dynamodb_write_lock:
            return write(*args, **kwargs)

    locked.__stagehub_atomic__ = True  # type: ignore[attr-defined]
    return locked


def make_dynamodb_writes_atomic() -> None:
    """Serialize moto's DynamoDB writes (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _DYNAMODB_WRITES:
        write = getattr(DynamoDBBackend, name, None)
        if write is not None and not getattr(write, "__stagehub_atomic__", False):
            setattr(DynamoDBBackend, name, _atomic(write))


class MotoServer:
    """Start with `start()`; `endpoint_url` is then where boto3 clients should point."""

    def __init__(self, port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        make_dynamodb_writes_atomic()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
