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
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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


class FunctionInstances:
    """Up to `max_instances` processes of one handler; `invoke` blocks until one of them has answered.

    `module` names the handler: "package.module" (its `lambda_handler`) or "package.module:function".
    """

    def __init__(self, module: str, max_instances: int = 4, timeout_s: float = INVOCATION_TIMEOUT_S) -> None:
        self.module = module
        self._max_instances = max_instances
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _current_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._max_instances,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_ignore_interrupts,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def invoke(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        pool = self._current_pool()
        try:
            future = pool.submit(_invoke, self.module, event, context, dict(os.environ))
        except (BrokenProcessPool, RuntimeError):  # a crashed instance broke the pool: start afresh
            self._discard(pool)
            pool = self._current_pool()
            future = pool.submit(_invoke, self.module, event, context, dict(os.environ))
        try:
            return future.result(timeout=self._timeout_s)  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise InvocationFailed(
                f"{self.module} did not answer within {self._timeout_s:.0f} s", timed_out=True
            ) from exc
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise InvocationFailed(f"an instance of {self.module} crashed") from exc
        except Exception as exc:
            raise InvocationFailed(f"{self.module} raised {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# --- inside an instance's process ---

_handlers: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {}
_applied_environment: dict[str, str] | None = None


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group; the gateway's process stops the instances itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _apply_environment(environment: Mapping[str, str]) -> None:
    global _applied_environment
    if environment == _applied_environment:
        return
    os.environ.clear()
    os.environ.update(environment)
    _applied_environment = dict(environment)
    from shared.settings import get_settings  # settings are re-read from the new environment on next use

    get_settings.cache_clear()


def _invoke(target: str, event: dict[str, Any], context: LambdaContext, environment: dict[str, str]) -> dict[str, Any]:
    """Run `target` ("package.module", whose `lambda_handler` is called, or "package.module:function")."""
    _apply_environment(environment)
    handler = _handlers.get(target)
    if handler is None:
        module, _, function = target.partition(":")
        handler = _handlers[target] = getattr(importlib.import_module(module), function or "lambda_handler")
    return handler(event, context)
