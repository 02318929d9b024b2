"""The compute thread's part of the worker: run a batch through its stage runner, then hand each execution on.

What the batch's outcome means for each execution (invariants the endings and the intake rely on):
- success: each item's outputs go to the endings (uploads, checkpoint or result.json), a later stage is queued;
- StageCancelled (raised by a runner when `BatchHooks.should_stop` said so at a step): cancelled items end
  CANCELLED, items past their deadline FAILED TIMEOUT, the rest (a stop's grace ran out) are given back at once;
- OutOfMemory and unforeseen errors: a batch of several runs again item by item, so only the item that fails
  alone fails (OUT_OF_MEMORY, INTERNAL); StageFailed fails every item with its code; TransientFailure gives the
  messages back for a retry;
- the device time of every call, whatever its outcome, is split evenly between its items (CONTRACTS C1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime

from gpu_worker.endings import Endings
from gpu_worker.jobs import Job
from gpu_worker.seams import Cancellations, Metrics, Registry
from gpu_worker.stages import StageCancelled, StageItem, StageOutput, runner_for
from gpu_worker.watchdog import ComputeProgress
from shared.errors import DeadlineExceeded, InternalFailure, OutOfMemory, StageFailed, TransientFailure
from shared.stages import ResultOutput, execution_prefix

log = logging.getLogger("gpu_worker.worker")


@dataclass(frozen=True)
class Work:
    """One job's current stage, ready to batch."""

    job: Job
    item: StageItem
    model: str
    key: Hashable  # what it batches by (unique for a message received before: it runs alone)
    shape: Hashable  # the batch key proper: the call's shapes and parameters


class BatchHooks:
    """Step reports and stop checks for one batched model call (gpu_worker.stages.StageHooks).

    `should_stop` is asked at every step: it marks jobs cancelled or past their deadline, and is True when
    none is left to compute or the worker's stop grace has run out (the runner then raises StageCancelled)."""

    def __init__(self, compute: Compute, batch: list[Work]) -> None:
        self._compute = compute
        self._batch = batch

    def on_step(self, step: int, steps: int) -> None:
        self._compute.progress.stepped(step, steps)
        for work in self._batch:
            if work.job.throttle.allow():
                self._compute.endings.progress(work.job, step, steps)

    def should_stop(self) -> bool:
        now = datetime.now(UTC)
        cancellations = self._compute.cancellations
        for work in self._batch:
            job = work.job
            if not job.cancelled and (job.closed or cancellations.should_stop(job.execution_id)):
                job.cancelled = True
            if not job.timed_out and job.past_deadline(now):
                job.timed_out = True
        if self._compute.interrupt_due():
            return True
        return all(work.job.cancelled or work.job.timed_out for work in self._batch)


class Compute:
    def __init__(
        self,
        *,
        registry: Callable[[], Registry],
        cancellations: Cancellations,
        endings: Endings,
        progress: ComputeProgress,
        metrics: Metrics,
        retry_backoff_s: int,
        interrupt_due: Callable[[], bool],
        next_stage: Callable[[Job], None],
        compiles: bool = False,
    ) -> None:
        """`registry` is called on first use (loading it may be slow); `interrupt_due` says a stop's grace ran
        out; `next_stage` queues a job's next stage (urgent: it does not wait for the batch window); `compiles`
        (torch.compile on) makes the first call of each shape as slow as a load, for the watchdog."""
        self._registry = registry
        self.cancellations = cancellations
        self.endings = endings
        self.progress = progress
        self.metrics = metrics
        self.retry_backoff_s = retry_backoff_s
        self.interrupt_due = interrupt_due
        self._next_stage = next_stage
        self._compiles = compiles
        self._shapes_run: set[Hashable] = set()

    def run_batch(self, batch: list[Work]) -> None:
        live = self._still_to_run(batch)
        if not live:
            return
        if self.interrupt_due():
            for work in live:
                self.endings.release(work.job, 0)
            return
        stage_type, model = live[0].job.stage.type, live[0].model
        outputs: list[StageOutput] | None = None
        error: BaseException | None = None
        shape = live[0].shape
        first_of_shape = self._compiles and shape not in self._shapes_run
        self._shapes_run.add(shape)
        self.progress.batch_started(loading=first_of_shape or not self._registry().is_loaded(model))
        started = time.monotonic()
        try:
            outputs = runner_for(stage_type).run(
                [w.item for w in live], model, self._registry(), BatchHooks(self, live)
            )
        except Exception as exc:
            error = exc
        finally:
            seconds = time.monotonic() - started
            self.progress.batch_ended()
        for work in live:  # device time, whatever the outcome: a batch's time split evenly (CONTRACTS C1)
            work.job.add_device_time(seconds / len(live))
        if error is None and outputs is not None:
            self.metrics.record_batch(stage_type, seconds * 1000, len(live))
            for work, output in zip(live, outputs, strict=True):
                self._after_stage(work.job, output)
        else:
            self._batch_failed(live, stage_type, error)

    def _still_to_run(self, batch: list[Work]) -> list[Work]:
        live, now = [], datetime.now(UTC)
        for work in batch:
            job = work.job
            if job.closed:
                continue
            if self.cancellations.should_stop(job.execution_id):
                self.endings.cancel(job)
            elif job.past_deadline(now):
                self.endings.fail(job, deadline_failure(job))
            else:
                live.append(work)
        return live

    def _batch_failed(self, live: list[Work], stage_type: str, error: BaseException | None) -> None:
        if isinstance(error, StageCancelled):
            for work in live:
                self._after_stop(work.job)
        elif isinstance(error, OutOfMemory | MemoryError):
            oom = error if isinstance(error, OutOfMemory) else OutOfMemory("the worker ran out of host memory")
            self._retry_singly_or(live, lambda job: self.endings.fail(job, oom))
        elif isinstance(error, StageFailed):
            for work in live:
                self.endings.fail(work.job, error)
        elif isinstance(error, TransientFailure):
            log.warning("transient failure in a %s batch: %s", stage_type, error)
            for work in live:
                self.endings.release(work.job, self.retry_backoff_s)
        else:
            log.error("unexpected failure in a %s batch of %d", stage_type, len(live), exc_info=error)
            internal = internal_failure(error)
            self._retry_singly_or(live, lambda job: self.endings.fail(job, internal))

    def _after_stop(self, job: Job) -> None:
        """A job of a batch stopped at a step: cancelled, past its deadline, or interrupted by a stop."""
        if job.closed:  # ended meanwhile by the endings (released, failed, cancelled before writing)
            return
        if job.cancelled:
            self.endings.cancel(job)
        elif job.timed_out:
            self.endings.fail(job, deadline_failure(job))
        else:
            self.endings.release(job, 0)

    def _retry_singly_or(self, batch: list[Work], otherwise: Callable[[Job], None]) -> None:
        """A batch that failed as a whole runs again item by item, so one item cannot fail the others."""
        if len(batch) > 1:
            for work in batch:
                self.run_batch([work])
        else:
            otherwise(batch[0].job)

    def _after_stage(self, job: Job, output: StageOutput) -> None:
        if job.cancelled or job.timed_out or job.closed:
            self._after_stop(job)
            return
        stage = job.stage
        prefix = execution_prefix(job.execution_id)
        images = []
        for index, text in enumerate(output.texts):
            job.outputs.append(
                ResultOutput(stage=stage.index, index=index, type="text", contentType="text/plain", text=text)
            )
        for index, image in enumerate(output.images):
            key = f"{prefix}stage-{stage.index}-{index}.png"
            job.outputs.append(
                ResultOutput(stage=stage.index, index=index, type="image", contentType="image/png", key=key)
            )
            images.append((key, image))
        job.previous_text = output.texts[0] if output.texts else None
        job.previous_images = list(output.images)
        if job.last_stage:  # the finished event carries 100%
            self.endings.finish(job, images)
        else:
            self.endings.stage_done(job, images, job.checkpoint())
            self.endings.progress(job, 1, 1, force=True)
            job.stage_index += 1
            self._next_stage(job)


def deadline_failure(job: Job) -> DeadlineExceeded:
    return DeadlineExceeded(f"the execution passed its deadline ({job.request.deadline})")


def internal_failure(error: BaseException | None) -> InternalFailure:
    return InternalFailure(f"the worker failed on this execution ({type(error).__name__})")


def classify(error: Exception) -> StageFailed:
    """An error nobody foresaw, as the failure its execution ends with."""
    if isinstance(error, MemoryError):
        return OutOfMemory("the worker ran out of host memory on this execution")
    return internal_failure(error)
