"""`make run`: the whole system on one machine against moto, with no AWS account and no GPU.

Starts a moto server (SQS, DynamoDB, S3) on loopback, creates every resource from `shared.resources`, serves
the API on 127.0.0.1:$PORT through the same Lambda handlers (authorizer included), runs the out-queue and
DLQ consumers (the same Lambda handlers fed SQS events) and one GPU worker process on the tiny models.
State lives in memory: stopping the stack forgets it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from local.moto import MotoServer
from local.provision import provision
from shared.models import bind_models
from shared.settings import clear_cached_settings, get_settings

DEFAULT_MODELS_DIR = Path(".cache/models")
WORKER_STOP_GRACE_S = 30.0


def _log(message: str) -> None:
    print(f"[stagehub] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def patched_environment(values: dict[str, str]) -> Iterator[None]:
    """Set `values` in os.environ (the in-process handlers read settings from it); restore on exit."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    clear_cached_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_cached_settings()


def models_environment(models_dir: Path) -> dict[str, str]:
    """MODELS and DEFAULT_MODELS for the tiny offline models, building them first if they are missing."""
    from gpu_worker.tiny_models import local_models_env, missing_tiny_models

    if missing_tiny_models(models_dir):
        _log(f"generating the tiny offline models into {models_dir}")
        subprocess.run([sys.executable, "-m", "gpu_worker.tiny_models", "--out", str(models_dir)], check=True)
    return local_models_env(models_dir)


class LocalStack:
    """The local stack; `start()` returns once `GET /health` answers. Also a context manager.

    It sets the stack's environment in this process while running (the in-process gateway and consumers
    read their settings from it) and restores it on `stop()`.
    """

    def __init__(
        self,
        models_dir: Path | str = DEFAULT_MODELS_DIR,
        *,
        port: int = 8000,
        host: str = "127.0.0.1",
        with_worker: bool = True,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.port = port
        self.host = host
        self.with_worker = with_worker
        self.worker_env = worker_env or {}
        self.environment: dict[str, str] = {}
        self._moto = MotoServer()
        self._env_context: contextlib.AbstractContextManager[None] | None = None
        self._gateway: Any = None
        self._gateway_serving = False
        self._consumers: Any = None
        self._sweeper: Any = None
        self._worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self._gateway.url if self._gateway else f"http://{self.host}:{self.port}"

    def start(self) -> LocalStack:
        _log("starting moto (SQS, DynamoDB, S3) on loopback")
        endpoint = self._moto.start()
        _log("creating tables, buckets and queues")
        cors = self._bind_gateway()
        self.environment = provision(endpoint, cors_origins=[self._gateway.url]) | models_environment(self.models_dir)
        self.environment |= cors
        # Webhook receivers on this machine listen on loopback over plain HTTP (API.md allows it locally).
        self.environment["WEBHOOK_ALLOW_LOOPBACK_HTTP"] = "true"
        self._env_context = patched_environment(self.environment)
        self._env_context.__enter__()
        bind_models(get_settings())
        self._start_consumers()
        if self.with_worker:
            self._start_worker()
        self._start_gateway()
        self._wait_healthy()
        return self

    def _bind_gateway(self) -> dict[str, str]:
        """Bind the gateway's port (0 picks one) and return the environment naming its origin as the one CORS allows."""
        from local.gateway import LocalGateway

        self._gateway = LocalGateway(host=self.host, port=self.port)
        return {"CORS_ALLOW_ORIGINS": json.dumps([self._gateway.url])}

    def _start_gateway(self) -> None:
        self._gateway.start()
        self._gateway_serving = True
        _log(f"API on {self._gateway.url} (docs: {self._gateway.url}/docs)")

    def _start_consumers(self) -> None:
        from local.consumers import QueueConsumers

        self._consumers = QueueConsumers(get_settings())
        self._consumers.start()
        _log("out-queue and dead-letter consumers running")
        from local.consumers import Sweeper

        self._sweeper = Sweeper().start()

    def _start_worker(self) -> None:
        env = os.environ | {"POLL_WAIT_S": "5", "DEVICE": "cpu"} | self.worker_env
        self._worker = subprocess.Popen([sys.executable, "-m", "gpu_worker"], env=env)
        _log(f"GPU worker started (pid {self._worker.pid}, tiny models from {self.models_dir})")

    def _wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the API did not answer /health within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._worker and self._worker.poll() is None:
            self._worker.send_signal(signal.SIGTERM)
            try:
                self._worker.wait(WORKER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._worker.kill()
                self._worker.wait()
        if self._gateway is not None and not self._gateway_serving:
            self._gateway.start()  # bound but never started (start() failed): serve so that stop() can shut it down
        for part in (self._gateway, self._consumers, self._sweeper):
            if part is not None:
                part.stop()
        self._gateway_serving = False
        self._gateway = self._consumers = self._worker = self._sweeper = None
        if self._env_context is not None:
            self._env_context.__exit__(None, None, None)
            self._env_context = None
        self._moto.stop()

    def worker_alive(self) -> bool:
        return self._worker is not None and self._worker.poll() is None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stagehub-local", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--no-worker", action="store_true", help="serve the API without a GPU worker")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack(args.models_dir, port=args.port, host=args.host, with_worker=not args.no_worker)
    try:
        stack.start()
        _log(f"ready: {stack.url} — press Ctrl-C to stop")
        while not stop.wait(1.0):
            if args.no_worker or stack.worker_alive():
                continue
            _log("the worker process exited; stopping")
            return 1
        return 0
    finally:
        _log("stopping")
        stack.stop()
        _log("stopped")


if __name__ == "__main__":
    sys.exit(main())
