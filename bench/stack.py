"""The moto stack for benchmarks: moto in its own process (as AWS is outside the worker's), the API in this one.

The worker under test runs in this process; moto's request handling must not compete with it for the GIL,
so moto is a separate `moto_server` process here (the local stack runs it in-process for simplicity).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.workload import ApiUser
from gpu_worker.tiny_models import ensure_tiny_models, local_models_env
from local.consumers import QueueConsumers
from local.gateway import LocalGateway
from local.provision import provision
from local.stack import patched_environment
from shared.models import bind_models
from shared.settings import StackSettings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _moto_server_command() -> list[str]:
    """The `moto_server` script beside this interpreter, or `python -m moto.server` where moto was installed
    without its scripts (e.g. into a --target directory on PYTHONPATH)."""
    script = Path(sys.executable).with_name("moto_server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def bench_stack(
    models_dir: Path, models_env: dict[str, str] | None = None, **overrides: str
) -> Iterator[StackSettings]:
    """Moto with every resource, the models, and this process's environment pointed at them.

    `models_env` is MODELS and DEFAULT_MODELS (shared.settings); by default, the tiny models under `models_dir`."""
    if models_env is None:
        ensure_tiny_models(models_dir)
        models_env = local_models_env(models_dir)
    with moto_process() as endpoint:
        env = provision(endpoint) | models_env | {"DEVICE": os.environ.get("DEVICE", "auto")}
        # Short long polls: a worker's shutdown waits for its last one (a full queue answers at once anyway).
        env |= {"POLL_WAIT_S": "2", "POWERTOOLS_METRICS_DISABLED": "true"}
        # One bench user submits a run's executions at once: per-user fair share would hold all but the first
        # few back (admission is measured by its own tests, not by the worker's figures); `settle` frees them.
        env |= {"MAX_ACTIVE_EXECUTIONS": "100", "MAX_QUEUED_EXECUTIONS": "10000"} | overrides
        with patched_environment(env):
            settings = StackSettings.from_env()
            bind_models(settings)
            yield settings


@contextlib.contextmanager
def api_user(timeout_s: float = 30) -> Iterator[ApiUser]:
    """A fresh user of the API, served by a local gateway over the functions of this process's environment."""
    gateway = LocalGateway(port=0)
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=timeout_s) as api:
            yield ApiUser.register(api)
    finally:
        gateway.stop()


def settle(settings: StackSettings) -> int:
    """Between timed runs: what the results consumer does in AWS, in this thread. It applies the workers' events
    (executions end, their fair-share slots free up: one user's runs would otherwise reach its active limit);
    returns how many events it applied."""
    return apply_events(QueueConsumers(settings))


def apply_events(consumers: QueueConsumers) -> int:
    """Poll the out-queue and the dead-letter queues until they are empty; returns how many messages it handled."""
    applied = 0
    while handled := consumers.poll_once():
        applied += handled
    return applied
