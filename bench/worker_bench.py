"""The worker against the bare model loop: the same pipeline, prompts, size and steps, with and without SQS/S3.

- bare loop: `pipeline(prompt=[...])` over the prompts, `batch` at a time, nothing else;
- worker: the real Worker on a queue holding the same executions (submitted over the API), from its start
  until the last execution is closed (outputs uploaded, result.json written, finished sent, message deleted).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from gpu_worker.jobs import Job
from gpu_worker.models import ModelRegistry
from gpu_worker.stages._torch import generators
from gpu_worker.worker import Worker
from shared.aws import client
from shared.queues import QueueClient
from shared.settings import Settings
from shared.stages import manifest_key
from shared.storage import BlobStore

GUIDANCE = 7.5
PROMPT = "a watercolour of {}"


@dataclass
class Run:
    executions: int
    seconds: float
    latencies_s: list[float]

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds

    def report(self) -> dict[str, Any]:
        values = sorted(self.latencies_s)
        return {
            "executions": self.executions,
            "seconds": round(self.seconds, 3),
            "executions_per_s": round(self.per_second, 4),
            "latency_p50_s": round(statistics.median(values), 3) if values else None,
            "latency_p95_s": round(_percentile(values, 95), 3) if values else None,
        }


def _percentile(sorted_values: list[float], percent: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(percent / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def bare_loop(registry: ModelRegistry, model: str, prompts: list[str], size: int, steps: int, batch: int) -> Run:
    """The model alone: the floor the worker is measured against."""
    pipeline = registry.diffusion(model)
    finished: list[float] = []
    started = time.perf_counter()
    for first in range(0, len(prompts), batch):
        chunk = prompts[first : first + batch]
        with torch.inference_mode():
            pipeline(
                prompt=chunk,
                num_inference_steps=steps,
                width=size,
                height=size,
                guidance_scale=GUIDANCE,
                generator=generators(list(range(first, first + len(chunk)))),
                output_type="pil",
            )
        finished += [time.perf_counter() - started] * len(chunk)
    return Run(len(prompts), time.perf_counter() - started, finished)


def calibrate_steps(registry: ModelRegistry, model: str, size: int, target_s: float) -> tuple[int, float]:
    """Denoising steps for which one bare execution of `model` takes about `target_s`; returns (steps, measured
    seconds)."""

    def one(steps: int) -> float:
        return min(bare_loop(registry, model, ["calibration"], size, steps, 1).seconds for _ in range(2))

    low, high = one(2), one(12)
    per_step = max((high - low) / 10, 1e-4)
    steps = max(2, min(150, round((target_s - (low - 2 * per_step)) / per_step)))
    return steps, one(steps)


class TimedWorker(Worker):
    """The real worker, noting when each execution is closed for good."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed_at: dict[str, float] = {}
        self.accepted_at: dict[str, float] = {}

    def _close(self, job: Job) -> None:
        super()._close(job)
        self.closed_at[job.execution_id] = time.perf_counter()

    def _queue_stage(self, job: Job, *, urgent: bool = False) -> None:
        self.accepted_at.setdefault(job.execution_id, time.perf_counter())
        super()._queue_stage(job, urgent=urgent)


def make_worker(settings: Settings, registry: ModelRegistry, *, batch: int, overlap: bool) -> TimedWorker:
    return TimedWorker(
        settings.model_copy(update={"max_batch_size": batch}),
        blobs=BlobStore(client("s3", settings)),
        queues=QueueClient(client("sqs", settings)),
        registry=registry,
        overlap_io=overlap,
    )


def worker_run(
    settings: Settings, registry: ModelRegistry, execution_ids: list[str], *, batch: int, overlap: bool
) -> Run:
    """Start a worker on a queue already holding `execution_ids`; time it until the last one is closed."""
    worker = make_worker(settings, registry, batch=batch, overlap=overlap)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 30.0), daemon=True)
    started = time.perf_counter()
    thread.start()
    deadline = started + 60 + 30 * len(execution_ids)
    while len(worker.closed_at) < len(execution_ids):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the worker closed {len(worker.closed_at)} of {len(execution_ids)} executions")
        time.sleep(0.005)
    seconds = max(worker.closed_at.values()) - started
    stop.set()
    thread.join(60)
    _check_results(settings, execution_ids)
    return Run(len(execution_ids), seconds, [worker.closed_at[e] - started for e in execution_ids])


def _check_results(settings: Settings, execution_ids: list[str]) -> None:
    s3 = client("s3", settings)
    for execution_id in execution_ids:
        s3.head_object(Bucket=settings.results_bucket, Key=manifest_key(execution_id))  # raises if missing
