"""The worker against the bare model loop: the same pipeline, prompts, size and steps, with and without SQS/S3.

- bare loop: `pipeline(prompt=[...])` over the prompts, `batch` at a time, nothing else;
- worker: the real Worker on a queue holding the same executions (submitted over the API), from its start
  until the last execution is closed (outputs uploaded, result.json written, finished sent, message deleted).
  As in production (gpu_worker.process), its compute loop runs in the main thread, the thread that loaded and
  warmed up the model, and the overlapped worker makes its AWS calls through the I/O process (aws_io.py); the
  naive worker makes them inline with in-process clients.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from bench.stack import settle
from gpu_worker.aws_io import AwsIoProcess
from gpu_worker.jobs import Job
from gpu_worker.models import ModelRegistry
from gpu_worker.seams import WorkerIo
from gpu_worker.stages._torch import generators
from gpu_worker.worker import Worker
from shared.aws import client
from shared.settings import StackSettings
from shared.stages import manifest_key

GUIDANCE = 7.5
PROMPT = "a watercolour of {}"


@dataclass
class Run:
    executions: int
    seconds: float
    latencies_s: list[float]
    model_s: float  # time spent in model calls (all of it in the bare loop)

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds

    @property
    def model_busy(self) -> float:
        """The share of the run the model was computing: what the worker's overlap is for."""
        return self.model_s / self.seconds

    def report(self) -> dict[str, Any]:
        values = sorted(self.latencies_s)
        return {
            "executions": self.executions,
            "seconds": round(self.seconds, 3),
            "executions_per_s": round(self.per_second, 4),
            "model_s": round(self.model_s, 3),
            "model_busy": round(self.model_busy, 4),
            "latency_p50_s": round(statistics.median(values), 3) if values else None,
            "latency_p95_s": round(_percentile(values, 95), 3) if values else None,
        }


def median_and_range(values: list[float], digits: int = 4) -> dict[str, float]:
    """A figure over the rounds: its median, lowest and highest (`digits` after the point)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
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
    seconds = time.perf_counter() - started
    return Run(len(prompts), seconds, finished, model_s=seconds)


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
        super().__init__(*args, on_closed=self._closed, **kwargs)
        self.closed_at: dict[str, float] = {}
        self.accepted_at: dict[str, float] = {}
        self.closed_event = threading.Event()
        self.model_s = 0.0  # in run_batch: the model call and its bookkeeping

    def run_batch(self, batch: list[Any]) -> None:
        started = time.perf_counter()
        super().run_batch(batch)
        self.model_s += time.perf_counter() - started

    def _closed(self, job: Job) -> None:
        self.closed_at[job.execution_id] = time.perf_counter()
        self.closed_event.set()

    def _queue_stage(self, job: Job, *, urgent: bool = False) -> None:
        self.accepted_at.setdefault(job.execution_id, time.perf_counter())
        super()._queue_stage(job, urgent=urgent)


def make_worker(
    settings: StackSettings, registry: ModelRegistry, *, batch: int, overlap: bool, aws_io: AwsIoProcess | None = None
) -> TimedWorker:
    """The worker as gpu_worker.process builds it: clients proxied through `aws_io` when given."""
    return TimedWorker(
        settings.model_copy(update={"max_batch_size": batch}),
        WorkerIo.build(settings, aws_io),
        registry=registry,
        overlap_io=overlap,
    )


def worker_run(
    settings: StackSettings, registry: ModelRegistry, execution_ids: list[str], *, batch: int, overlap: bool
) -> Run:
    """Run a worker on a queue already holding `execution_ids`; time it until the last one is closed."""
    aws_io = AwsIoProcess(settings) if overlap else None
    try:
        worker = make_worker(settings, registry, batch=batch, overlap=overlap, aws_io=aws_io)
        stop = threading.Event()
        watch = threading.Thread(target=_stop_when_closed, args=(worker, len(execution_ids), stop), daemon=True)
        started = time.perf_counter()
        watch.start()
        worker.run(stop, 30.0)
        watch.join()
    finally:
        if aws_io is not None:
            aws_io.close()
    if len(worker.closed_at) < len(execution_ids):
        raise RuntimeError(f"the worker closed {len(worker.closed_at)} of {len(execution_ids)} executions")
    _check_results(settings, execution_ids)
    settle(settings)  # untimed
    seconds = max(worker.closed_at.values()) - started
    latencies = [worker.closed_at[e] - started for e in execution_ids]
    return Run(len(execution_ids), seconds, latencies, model_s=worker.model_s)


def _stop_when_closed(worker: TimedWorker, expected: int, stop: threading.Event) -> None:
    """Stop the worker once it has closed `expected` executions, or after a generous deadline."""
    deadline = time.monotonic() + 60 + 30 * expected
    while len(worker.closed_at) < expected and time.monotonic() < deadline:
        worker.closed_event.wait(1.0)
        worker.closed_event.clear()
    stop.set()


def _check_results(settings: StackSettings, execution_ids: list[str]) -> None:
    s3 = client("s3", settings)
    for execution_id in execution_ids:
        s3.head_object(Bucket=settings.results_bucket, Key=manifest_key(execution_id))  # raises if missing
