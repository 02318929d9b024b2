"""The worker loop: long-poll, prefetch, batch, compute, hand over to the endings; one process per GPU.

Three kinds of thread keep the GPU busy (DESIGN.md, "GPU efficiency"):
- intake: receives messages, loads request.json and inputs (gpu_worker.intake), queues the first stage; it
  receives only what will start within about one batch (at most `max_batch_size` waiting, and only when the
  running batch ends within `prefetch_horizon_s`), so the rest stays visible to other workers;
- compute (the caller's thread): takes batches of the same key from the collector and runs the model;
- uploads and events (gpu_worker.endings): outputs, checkpoints, result.json, events, deleting messages.
With `overlap_io=False` everything runs in the compute thread, one step after another (the naive worker the
benchmarks compare against). In production the clients are proxies to the I/O process (aws_io.py).

Failures belong to jobs, never to threads: every exception while taking, computing or ending an execution
ends that execution (FAILED with BAD_INPUT, OUT_OF_MEMORY, TIMEOUT or INTERNAL; transient S3/SQS/DynamoDB
errors give the message back for a retry), and the worker goes on. A batch that fails as a whole is run again
item by item first, and a message received more than once runs alone (a batch of one), so one poisonous
input cannot fail its batch-mates. Should a thread die anyway, or the compute loop stop making progress, the
watchdog (gpu_worker.watchdog) gives back every held message and ends the process, which systemd and the
supervisor restart. A stop (SIGTERM) ends intake at once, lets running batches finish for `grace_s`, then
interrupts them at their next step and gives their messages back (finished stages are kept: a redelivery
resumes at the first unfinished one, see gpu_worker.jobs.Checkpoint).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from gpu_worker import intake
from gpu_worker.batching import BatchCollector
from gpu_worker.endings import Endings
from gpu_worker.heartbeat import HeartbeatThread
from gpu_worker.held import ReceiptJournal
from gpu_worker.jobs import Job, OpenJobs
from gpu_worker.metrics import NullMetrics
from gpu_worker.progress import ProgressThrottle
from gpu_worker.seams import Metrics, Registry, WorkerIo
from gpu_worker.stages import StageCancelled, StageItem, StageOutput, batch_key, model_for, runner_for
from gpu_worker.watchdog import ComputeProgress, StallLimits, Watchdog
from shared.errors import (
    DeadlineExceeded,
    InternalFailure,
    NotFound,
    OutOfMemory,
    PoisonMessage,
    StageFailed,
    TransientFailure,
)
from shared.messages import parse_in_message
from shared.queues import ReceivedMessage
from shared.resources import IN_QUEUE_VISIBILITY_S
from shared.settings import Settings
from shared.stages import ResultOutput, execution_prefix

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 10  # visibility given back to a message released after a transient failure
MAX_MESSAGES_PER_POLL = 10
ACCEPT_THREADS = 4  # messages of one poll accepted at once
EXIT_ABANDONED = 70  # the process's exit status after the watchdog gave everything back


@dataclass(frozen=True)
class Work:
    """One job's current stage, ready to batch."""

    job: Job
    item: StageItem
    model: str
    key: Hashable


class BatchHooks:
    """Step reports and stop checks for one batched model call (gpu_worker.stages.StageHooks).

    `should_stop` is asked at every step: it marks jobs cancelled or past their deadline, and is True when
    none is left to compute or the worker's stop grace has run out (the runner then raises StageCancelled)."""

    def __init__(self, worker: Worker, batch: list[Work]) -> None:
        self._worker = worker
        self._batch = batch

    def on_step(self, step: int, steps: int) -> None:
        self._worker.progress.stepped(step, steps)
        for work in self._batch:
            if work.job.throttle.allow():
                self._worker.endings.progress(work.job, step, steps)

    def should_stop(self) -> bool:
        now = datetime.now(UTC)
        cancellations = self._worker.cancellations
        for work in self._batch:
            job = work.job
            if not job.cancelled and (job.closed or cancellations.should_stop(job.execution_id)):
                job.cancelled = True
            if not job.timed_out and job.past_deadline(now):
                job.timed_out = True
        if self._worker.interrupt_due():
            return True
        return all(work.job.cancelled or work.job.timed_out for work in self._batch)


def _exit_now(reason: str) -> None:
    os._exit(EXIT_ABANDONED)


class Worker:
    def __init__(
        self,
        settings: Settings,
        io_: WorkerIo,
        *,
        registry: Registry | None = None,
        visibility_s: int = IN_QUEUE_VISIBILITY_S,
        overlap_io: bool = True,
        retry_backoff_s: int = RETRY_BACKOFF_S,
        metrics: Metrics | None = None,
        on_busy_change: Callable[[bool], None] | None = None,
        on_ready: Callable[[], None] = lambda: None,
        on_fatal: Callable[[str], None] = _exit_now,
        on_closed: Callable[[Job], None] | None = None,
        journal: ReceiptJournal | None = None,
    ) -> None:
        """`on_ready` is called once, after the first poll returned (CONTRACTS C3; models are loaded and warmed
        before `run`); `on_fatal(reason)` ends the process after the watchdog gave back every held message."""
        self.settings = settings
        self.blobs = io_.blobs
        self.queues = io_.queues
        self.cancellations = io_.cancellations
        self._registry = registry
        self.collector: BatchCollector[Work] = BatchCollector(
            lambda work: work.key, window_s=settings.batch_window_ms / 1000, max_size=settings.max_batch_size
        )
        self.heartbeat = HeartbeatThread(io_.queues, settings.in_queue_url, visibility_s, journal)
        self.overlap_io = overlap_io
        self.retry_backoff_s = retry_backoff_s
        self.max_open_jobs = max(2 * settings.max_batch_size, 2)
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.jobs = OpenJobs(on_busy_change)
        self.endings = Endings(
            settings,
            io_,
            self.heartbeat,
            self.jobs,
            self.metrics,
            overlap_io=overlap_io,
            retry_backoff_s=retry_backoff_s,
            on_closed=on_closed,
        )
        self.progress = ComputeProgress()
        self._accepting = ThreadPoolExecutor(ACCEPT_THREADS, "accept")
        self._intake_stop = threading.Event()
        self._intake: threading.Thread | None = None
        self._on_ready: Callable[[], None] | None = on_ready
        self._on_fatal = on_fatal
        self._watchdog: Watchdog | None = None
        self._stop: threading.Event | None = None
        self._grace_s = 30.0
        self._stop_seen_at: float | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from gpu_worker.models import ModelRegistry

            self._registry = ModelRegistry(self.settings, self.blobs)
        return self._registry

    # --- lifecycle ---

    def start(self) -> None:
        self.progress.beat()  # the time spent loading models before `start` is no stall
        self.heartbeat.start()
        self.cancellations.start()
        checks: dict[str, Callable[[], bool]] = {
            "heartbeat": lambda: self.heartbeat.alive,
            "cancellation watcher": lambda: self.cancellations.alive,
        }
        if self.overlap_io:
            intake_thread = threading.Thread(target=self._intake_loop, name="intake", daemon=True)
            self._intake = intake_thread
            intake_thread.start()
            checks["intake"] = lambda: intake_thread.is_alive() or self._intake_stop.is_set()
        limits = StallLimits(
            self.settings.watchdog_stall_multiple, self.settings.watchdog_min_stall_s, self.settings.watchdog_load_s
        )
        self._watchdog = Watchdog(self.progress, limits, checks, self.abandon)
        self._watchdog.start()

    def run(self, stop: threading.Event, grace_s: float = 30.0) -> None:
        """Work until `stop` is set; then finish what completes within `grace_s` and release the rest."""
        self._stop, self._grace_s = stop, grace_s
        self.start()
        while not stop.is_set():
            self.step()
        self.shutdown(grace_s)

    def step(self, timeout_s: float = 0.2) -> bool:
        """One round of the compute loop (polling first when not overlapped); True if a batch ran."""
        self.progress.beat()
        if not self.overlap_io and len(self.collector) == 0:
            self.poll_once(wait_s=min(self.settings.poll_wait_s, 1))
        batch = self.collector.next_batch(timeout_s)
        if batch:
            self.run_batch(batch)
        return bool(batch)

    def open_jobs(self) -> int:
        return len(self.jobs)

    @property
    def on_busy_change(self) -> Callable[[bool], None] | None:
        """Told True when the worker starts holding executions and False when it holds none any more."""
        return self.jobs.on_busy_change

    @on_busy_change.setter
    def on_busy_change(self, callback: Callable[[bool], None] | None) -> None:
        self.jobs.on_busy_change = callback

    def interrupt_due(self) -> bool:
        """After a stop: True once `grace_s` has passed, so running batches stop at their next step."""
        if self._stop_seen_at is None:
            if self._stop is None or not self._stop.is_set():
                return False
            self._stop_seen_at = time.monotonic()
        return time.monotonic() - self._stop_seen_at >= self._grace_s

    def shutdown(self, grace_s: float = 30.0) -> None:
        self._intake_stop.set()
        self._grace_s = grace_s
        if self._stop_seen_at is None:
            self._stop_seen_at = time.monotonic()
        while self.open_jobs() and not self.interrupt_due():
            self.step()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._intake is not None:  # a long poll in flight releases what it gets; closing now would hide them
            self._intake.join(self.settings.poll_wait_s + 5)
        self._accepting.shutdown(wait=True)
        for work in self.collector.drain():
            self.endings.release(work.job, 0)
        self.endings.shutdown()
        for job in self.jobs.all():  # still uploading when the grace ran out
            self.endings.release(job, 0)
        self.heartbeat.stop()
        self.cancellations.stop()

    def abandon(self, reason: str) -> None:
        """The watchdog's way out: give back every held message at once, then end the process (`on_fatal`)."""
        given_back = True
        for receipt in self.heartbeat.receipts():
            try:
                self.queues.change_visibility(self.settings.in_queue_url, receipt, 0)
            except Exception as exc:  # it comes back when its visibility lapses, or the successor releases it
                given_back = False
                log.warning("could not give back a message: %s", exc)
        if given_back:
            self.heartbeat.forget_all()
        self._on_fatal(reason)

    # --- intake ---

    def _intake_loop(self) -> None:
        while not self._intake_stop.is_set():
            try:
                self.poll_once(wait_s=self.settings.poll_wait_s)
            except TransientFailure as exc:
                log.warning("receive failed: %s", exc)
                self._intake_stop.wait(1.0)
            except Exception:  # a bug in a poll must not end the intake (the watchdog would end the process)
                log.exception("intake failed; polling again")
                self._intake_stop.wait(1.0)

    def room(self) -> int:
        """How many messages to receive now: what starts within about one batch, within the open-job cap."""
        waiting = len(self.collector)
        room = min(self.settings.max_batch_size - waiting, self.max_open_jobs - self.open_jobs())
        if room <= 0:
            return 0
        remaining = self.progress.remaining_s()
        if remaining is None or remaining > self.settings.prefetch_horizon_s:
            return 0  # the running batch is long: others' workers may start these sooner
        return room

    def poll_once(self, wait_s: int) -> int:
        """Receive what fits into the room and accept it; returns how many messages came."""
        room = self.room()
        if room <= 0:
            self._intake_stop.wait(0.05)
            self._ready()
            return 0
        messages = self.queues.receive(
            self.settings.in_queue_url, max_messages=min(MAX_MESSAGES_PER_POLL, room), wait_s=wait_s
        )
        self._ready()
        if self.overlap_io and len(messages) > 1:
            # In parallel (each accept waits on S3 and DynamoDB), so one poll's executions meet the batch window.
            list(self._accepting.map(self._accept_unless_stopping, messages))
        else:
            for message in messages:
                self._accept_unless_stopping(message)
        return len(messages)

    def _ready(self) -> None:
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            try:
                on_ready()
            except Exception:
                log.exception("the ready callback failed")

    def _accept_unless_stopping(self, message: ReceivedMessage) -> None:
        if self._intake_stop.is_set() and self.overlap_io:
            self.endings.release_message(message, 0)
            return
        try:
            self.accept(message)
        except Exception:  # accept guards its own steps; this is the last line
            log.exception("accepting message %s failed; giving it back", message.message_id)
            self.endings.release_message(message, self.retry_backoff_s)

    def accept(self, message: ReceivedMessage) -> None:
        """Take one in-queue message: load its request and inputs, report started, queue its (next) stage."""
        try:
            parsed = parse_in_message(message.body)
        except PoisonMessage as exc:
            log.error("poison message %s left for the dead-letter queue: %s", message.message_id, exc)
            return
        self.heartbeat.track(message.message_id, message.receipt_handle)
        try:
            request = intake.load_request(self.blobs, parsed)
            if self.cancellations.should_skip(request.execution_id):
                log.info("execution %s is cancelled, deleted or final: not started", request.execution_id)
                self.endings.drop(message)
                return
        except NotFound:
            log.info("execution %s has no request any more (deleted): not started", parsed.execution_id)
            self.endings.drop(message)
            return
        except TransientFailure as exc:
            log.warning("could not load %s, retrying later: %s", parsed.execution_id, exc)
            self.endings.release_message(message, self.retry_backoff_s)
            return
        except StageFailed as exc:
            self.endings.fail_message(message, parsed.execution_id, exc)
            return
        except Exception as exc:
            log.exception("could not load %s", parsed.execution_id)
            self.endings.fail_message(message, parsed.execution_id, _internal(exc))
            return
        job = Job(message=message, request=request, throttle=ProgressThrottle(self.settings.progress_interval_s))
        self.jobs.add(job)
        self.cancellations.watch(job.execution_id)
        try:
            job.check_deadline(datetime.now(UTC))
            intake.prefetch_inputs(self.blobs, job)
            if job.attempt > 1:  # a predecessor may have finished stages: never compute them twice
                intake.resume(self.blobs, self.settings.results_bucket, job)
        except TransientFailure as exc:
            log.warning("could not fetch inputs of %s: %s", job.execution_id, exc)
            self.endings.release(job, self.retry_backoff_s)
            return
        except StageFailed as exc:
            self.endings.fail(job, exc)
            return
        except Exception as exc:
            log.exception("could not take %s", job.execution_id)
            self.endings.fail(job, _classify(exc))
            return
        self.endings.started(job)
        self._queue_stage(job)

    def _queue_stage(self, job: Job, *, urgent: bool = False) -> None:
        try:
            job.check_deadline(datetime.now(UTC))
            item = job.stage_item()
            model = model_for(self.settings, job.stage.type, item.params.get("model"))
            key = batch_key(job.stage.type, model, item)
        except StageFailed as exc:
            self.endings.fail(job, exc)
            return
        except Exception as exc:
            log.exception("could not queue %s's stage %d", job.execution_id, job.stage_index)
            self.endings.fail(job, _classify(exc))
            return
        if job.attempt > 1:
            key = (key, job.message.message_id)  # received before: it runs alone, sparing its batch-mates
        self.collector.add(Work(job, item, model, key), urgent=urgent)

    # --- compute ---

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
        self.progress.batch_started(loading=not self.registry.is_loaded(model))
        started = time.monotonic()
        try:
            outputs = runner_for(stage_type).run([w.item for w in live], model, self.registry, BatchHooks(self, live))
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
                self.endings.fail(job, _deadline(job))
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
            internal = _internal(error)
            self._retry_singly_or(live, lambda job: self.endings.fail(job, internal))

    def _after_stop(self, job: Job) -> None:
        """A job of a batch stopped at a step: cancelled, past its deadline, or interrupted by a stop."""
        if job.cancelled:
            self.endings.cancel(job)
        elif job.timed_out:
            self.endings.fail(job, _deadline(job))
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
            self._queue_stage(job, urgent=True)


def _deadline(job: Job) -> DeadlineExceeded:
    return DeadlineExceeded(f"the execution passed its deadline ({job.request.deadline})")


def _internal(error: BaseException | None) -> InternalFailure:
    return InternalFailure(f"the worker failed on this execution ({type(error).__name__})")


def _classify(error: Exception) -> StageFailed:
    if isinstance(error, MemoryError):
        return OutOfMemory("the worker ran out of host memory on this execution")
    return _internal(error)
