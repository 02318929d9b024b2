"""The API side: handler cold import time, warm request latency on the local stack, queue-to-start latency."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time

from bench.worker_bench import TimedWorker
from bench.workload import ApiUser
from functions.routes import API_FUNCTIONS, AUTHORIZER_MODULE, DLQ_HANDLER_MODULE, RESULTS_CONSUMER_MODULE

_IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s+(\S.*)$")


def cold_import_ms(module: str) -> float:
    """Cumulative import time of a handler module in a fresh interpreter (`python -X importtime`)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.search(line)
        if match and match.group(3).strip() == module:
            return int(match.group(2)) / 1000
    raise RuntimeError(f"no import time for {module}")


def cold_imports(repeats: int = 7) -> dict[str, float]:
    """Best of `repeats` per handler module; the modules take turns, so a slow spell of a shared machine does
    not fall on every try of one module."""
    modules = [*API_FUNCTIONS.values(), AUTHORIZER_MODULE, RESULTS_CONSUMER_MODULE, DLQ_HANDLER_MODULE]
    best = dict.fromkeys(modules, float("inf"))
    for _ in range(repeats):
        for module in modules:
            best[module] = min(best[module], cold_import_ms(module))
    return {module: round(ms, 1) for module, ms in best.items()}


def _summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "samples": len(ordered),
    }


def warm_latency(user: ApiUser, pipeline_id: str, requests: int = 100) -> dict[str, dict[str, float]]:
    """Warm requests through the local gateway: authorizer, handler, DynamoDB/S3 on moto."""
    calls = {
        "GET /health": lambda: user.api.get("/health"),
        "GET /pipelines/{id}": lambda: user.api.get(f"/pipelines/{pipeline_id}", headers=user.headers),
        "GET /executions": lambda: user.api.get("/executions", headers=user.headers),
    }
    results = {}
    for name, call in calls.items():
        for _ in range(5):
            call().raise_for_status()
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            call().raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
        results[name] = _summary(samples)
    return results


def queue_to_start(worker: TimedWorker, user: ApiUser, pipeline_id: str, samples: int = 10) -> dict[str, float]:
    """From the API's 202 (its in-queue message already sent; the local gateway runs the function in a process
    of its own) to the idle, long-polling worker starting the execution (request.json read, started event sent,
    first stage queued for the GPU)."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 30.0), daemon=True)
    thread.start()
    delays = []
    try:
        for n in range(samples):
            time.sleep(0.5)  # the worker is idle in its long poll
            execution_id = user.submit(pipeline_id, {"subject": f"latency {n}"})
            answered_at = time.perf_counter()
            deadline = answered_at + 30
            while execution_id not in worker.closed_at:
                if time.perf_counter() > deadline:
                    raise RuntimeError("the worker did not finish the execution")
                time.sleep(0.001)
            delays.append((worker.accepted_at[execution_id] - answered_at) * 1000)
    finally:
        stop.set()
        thread.join(60)
    return _summary(delays)
