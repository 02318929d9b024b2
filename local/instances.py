"""Lambda function instances for the local gateway: each instance is a process serving one invocation at a time.

API Gateway hands each Lambda instance one request at a time, and each instance is its own process: its
module-level state (Powertools' resolver and routers, Logger keys, Metrics, cached clients and settings) belongs
to that instance alone. Threads sharing one imported handler do not behave like that (one request would read
another's event), so the local gateway keeps a small pool of processes per function, grown on demand up to a
limit, as Lambda scales out. An instance imports its handler on its first invocation (its cold start).

The environment of the gateway's process is sent with every invocation and applied when it changed, so an
instance sees the settings the caller sees now (tests point the stack at private queues by setting variables).
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

ACCOUNT_ID = "123456789012"
INVOCATION_TIMEOUT_S = 29.0  # API Gateway's integration timeout


@dataclass(frozen=True)
class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:local"

    def get_remaining_time_in_millis(self) -> int:
        return int(INVOCATION_TIMEOUT_S * 1000)


class InvocationFailed(Exception):
    """The function raised, crashed or did not answer in time (API Gateway: 502, or 504 for the timeout)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class FunctionError(InvocationFailed):
    """The handler raised; its instance lives on (as a Lambda instance does), ready for the next invocation."""


class _Instance:
    """One process running `python -m local.instances FD`: invocations in, responses out, one at a time."""

    def __init__(self, target: str) -> None:
        ours, theirs = socket.socketpair()
        search_path = os.pathsep.join(path for path in sys.path if path)  # the gateway's modules, wherever it runs
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.instances", str(theirs.fileno()), target],
            pass_fds=[theirs.fileno()],
            env=os.environ | {"PYTHONPATH": search_path},
        )
        theirs.close()
        self._connection = Connection(ours.detach())

    def invoke(self, event: dict[str, Any], context: LambdaContext, timeout_s: float) -> dict[str, Any]:
        """The handler's response; InvocationFailed if it raised, died or took longer than `timeout_s`."""
        try:
            self._connection.send((event, context, dict(os.environ)))
            if not self._connection.poll(timeout_s):
                raise InvocationFailed(f"no answer within {timeout_s:.0f} s", timed_out=True)
            ok, value = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise InvocationFailed(f"the instance died: {exc}") from exc
        if not ok:
            raise FunctionError(str(value))
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self._connection.close()
        self._process.kill()
        self._process.wait()


class FunctionInstances:
    """Up to `max_instances` processes of one handler; `invoke` blocks until one of them has answered.

    `target` names the handler: "package.module" (its `lambda_handler`) or "package.module:function". An
    instance whose handler raised serves the next invocation; one that crashed or timed out is discarded, and a
    new one starts on demand.
    """

    def __init__(self, target: str, max_instances: int = 4, timeout_s: float = INVOCATION_TIMEOUT_S) -> None:
        self.target = target
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._idle: list[_Instance] = []
        self._slots = threading.BoundedSemaphore(max_instances)
        self._closed = False

    def invoke(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        with self._slots:
            with self._lock:
                if self._closed:
                    raise InvocationFailed("the gateway is stopping")
                instance = self._idle.pop() if self._idle else None
            if instance is None:
                instance = _Instance(self.target)
            try:
                response: dict[str, Any] | None = instance.invoke(event, context, self._timeout_s)
                failure: FunctionError | None = None
            except FunctionError as exc:
                response, failure = None, exc
            except InvocationFailed:  # crashed or stuck: this instance is done for
                instance.close()
                raise
            with self._lock:
                if self._closed:
                    instance.close()
                else:
                    self._idle.append(instance)
            if failure is not None:
                raise failure
            assert response is not None
            return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for instance in idle:
            instance.close()


# --- inside an instance's process ---


def _apply_environment(environment: Mapping[str, str], applied: Mapping[str, str] | None) -> None:
    if environment == applied:
        return
    os.environ.clear()
    os.environ.update(environment)
    from shared.settings import clear_cached_settings  # re-read from the new environment on next use

    clear_cached_settings()


def _serve(connection: Connection, target: str) -> None:
    """Answer invocations until the gateway closes the connection; the handler is imported by the first."""
    module, _, function = target.partition(":")
    handler: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    applied: dict[str, str] | None = None
    while True:
        try:
            event, context, environment = connection.recv()
        except (EOFError, OSError):
            return
        _apply_environment(environment, applied)
        applied = environment
        try:
            if handler is None:
                handler = getattr(importlib.import_module(module), function or "lambda_handler")
            reply: tuple[bool, Any] = (True, handler(event, context))
        except Exception as exc:  # the gateway answers 502, as API Gateway does for a failed function
            reply = (False, f"{type(exc).__name__}: {exc}")
        connection.send(reply)


def main() -> None:
    # Ctrl-C reaches the whole process group; the gateway stops its instances itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(Connection(int(sys.argv[1])), sys.argv[2])


if __name__ == "__main__":
    main()
