"""AWS calls made in a helper process, so botocore's Python never runs under the compute process's GIL.

Each botocore call spends a few milliseconds of pure Python (build, sign, send, parse). In the worker those
calls come from its I/O threads, but the GIL they take is the one the compute thread needs between kernel
launches (on a GPU) or between small ops (on a CPU): every millisecond of it is a millisecond the model
waits (bench: worker efficiency). Here the I/O threads keep their logic and their clients become proxies:
a call pickles (service, operation, arguments) over a socket pair, a thread pool in the helper process
(`python -m gpu_worker.aws_io FD`) makes it with a real client, and the response or the exception comes
back. Streaming bodies are read in the helper; paginators page there.

Botocore's exceptions pickle (ClientError comes back as a plain ClientError with the same response), so
callers catch what they caught before. If the helper dies, pending and later calls raise
`AwsIoUnavailable` (a BotoCoreError, so transient for every caller) and `on_exit` is called: the worker
stops and its service manager restarts it.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from botocore.exceptions import BotoCoreError

from shared.settings import CommonSettings

log = logging.getLogger(__name__)

READY = "ready"
PAGINATE = "__paginate__"  # operation name for "all pages of this paginated operation"
HELPER_THREADS = 8  # the worker's I/O threads plus a long poll, with room to spare


class AwsIoUnavailable(BotoCoreError):
    fmt = "the AWS I/O process is not running: {reason}"


class _Paginator:
    """Stands in for a botocore paginator: `paginate(**kwargs)` yields the pages fetched by the helper."""

    def __init__(self, client: ClientProxy, operation: str) -> None:
        self._client = client
        self._operation = operation

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self._client.call(PAGINATE, {"operation": self._operation, "kwargs": kwargs})  # type: ignore[no-any-return]


class ClientProxy:
    """A botocore client's operations (`client.put_object(...)`), made by the helper process."""

    def __init__(self, process: AwsIoProcess, service: str) -> None:
        self._process = process
        self._service = service

    def call(self, operation: str, kwargs: dict[str, Any]) -> Any:
        return self._process.call(self._service, operation, kwargs)

    def get_paginator(self, operation: str) -> _Paginator:
        return _Paginator(self, operation)

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        if operation.startswith("_"):
            raise AttributeError(operation)
        return lambda **kwargs: self.call(operation, kwargs)


class AwsIoProcess:
    """The helper process and this side's end of the socket pair; `client(service)` gives proxies."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        services: tuple[str, ...] = ("s3", "sqs", "dynamodb"),
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        """Start the helper and wait until it has built a client for each of `services` (the first call of a
        cold client would otherwise pay for loading its service model)."""
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gpu_worker.aws_io", str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._dead_reason: str | None = None
        self._closing = False
        self._on_exit = on_exit
        self._connection.send((settings, services))
        if self._connection.recv() != READY:
            raise RuntimeError("the AWS I/O process did not start")
        self._reader = threading.Thread(target=self._read_replies, name="aws-io-replies", daemon=True)
        self._reader.start()

    def client(self, service: str) -> ClientProxy:
        return ClientProxy(self, service)

    @property
    def alive(self) -> bool:
        return self._dead_reason is None

    def call(self, service: str, operation: str, kwargs: dict[str, Any]) -> Any:
        future: Future[Any] = Future()
        with self._send_lock:
            if self._dead_reason is not None:
                raise AwsIoUnavailable(reason=self._dead_reason)
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                self._connection.send((call_id, service, operation, kwargs))
            except OSError as exc:
                self._pending.pop(call_id, None)
                raise AwsIoUnavailable(reason=str(exc)) from exc
        return future.result()

    def _read_replies(self) -> None:
        try:
            while True:
                call_id, ok, value = self._connection.recv()
                future = self._pending.pop(call_id)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (EOFError, OSError) as exc:
            self._died(f"its connection closed ({type(exc).__name__})")

    def _died(self, reason: str) -> None:
        with self._send_lock:
            self._dead_reason = reason
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(AwsIoUnavailable(reason=reason))
        if not self._closing:
            log.error("the AWS I/O process stopped: %s", reason)
            if self._on_exit is not None:
                self._on_exit()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the helper (calls still in flight, such as a long poll, are abandoned)."""
        self._closing = True
        self._connection.close()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout_s)


# --- the helper process ---


def _plain(response: Any) -> Any:
    """A response that pickles: streaming bodies read into memory."""
    if isinstance(response, dict) and hasattr(response.get("Body"), "read"):
        return {**response, "Body": io.BytesIO(response["Body"].read())}
    return response


def _serve(connection: Connection) -> None:
    from shared.aws import client

    settings, services = connection.recv()
    for service in services:
        client(service, settings)
    connection.send(READY)
    send_lock = threading.Lock()

    def handle(call_id: int, service: str, operation: str, kwargs: dict[str, Any]) -> None:
        try:
            real = client(service, settings)
            if operation == PAGINATE:
                value: Any = list(real.get_paginator(kwargs["operation"]).paginate(**kwargs["kwargs"]))
            else:
                value = _plain(getattr(real, operation)(**kwargs))
            reply: tuple[int, bool, Any] = (call_id, True, value)
        except Exception as exc:  # every failure goes back to the caller, which knows what it means
            reply = (call_id, False, exc)
        with send_lock:
            try:
                connection.send(reply)
            except Exception as exc:  # an exception or value that does not pickle
                connection.send((call_id, False, RuntimeError(f"{operation}: {reply[2]!r} ({exc})")))

    with ThreadPoolExecutor(HELPER_THREADS, "aws-io") as pool:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):  # the worker closed its end or died
                os._exit(0)
            pool.submit(handle, *message)


def main() -> None:
    # The worker decides when to stop; a SIGTERM/SIGINT sent to the whole group must not cut its I/O short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    _serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
