"""The worker loop: long-poll, prefetch, batch, compute, hand over to the endings; one process per GPU.

Three kinds of thread keep the GPU busy (DESIGN.md, "GPU efficiency"):
- intake (gpu_worker.intake): receives messages, loads request.json and inputs, queues the first stage; it
  receives only what will start within about one batch, so the rest stays visible to other workers;
- compute (the caller's thread): takes batches of the same key from the collector and runs the model
  (gpu_worker.compute: what each outcome of a batch means for its executions);
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
from collections.abc import Callable
from datetime import UTC, datetime

from gpu_worker.batching import BatchCollector
from gpu_worker.compute import Compute, Work, classify
from gpu_worker.endings import Endings
from gpu_worker.heartbeat import HeartbeatThread
from gpu_worker.held import ReceiptJournal
from gpu_worker.intake import Intake
from gpu_worker.jobs import Job, OpenJobs
from gpu_worker.metrics import NullMetrics
from gpu_worker.performance import profile_of
from gpu_worker.seams import Metrics, Registry, WorkerIo
from gpu_worker.stages import batch_key, model_for
from gpu_worker.watchdog import ComputeProgress, StallLimits, Watchdog
from shared.errors import StageFailed
from shared.resources import IN_QUEUE_VISIBILITY_S
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 10  # visibility given back to a message released after a transient failure
EXIT_ABANDONED = 70  # the process's exit status after the watchdog gave everything back


def _exit_now(reason: str) -> None:
    os._exit(EXIT_ABANDONED)


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
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
        self.compute = Compute(
            registry=lambda: self.registry,
            cancellations=self.cancellations,
            endings=self.endings,
            progress=self.progress,
            metrics=self.metrics,
            retry_backoff_s=retry_backoff_s,
            interrupt_due=self.interrupt_due,
            next_stage=lambda job: self._queue_stage(job, urgent=True),
            compiles=profile_of(settings).compiles,
        )
        self.intake = Intake(
            settings,
            io_,
            heartbeat=self.heartbeat,
            endings=self.endings,
            jobs=self.jobs,
            waiting=lambda: len(self.collector),
            remaining_s=lambda: self.progress.remaining_s(),  # read late: the tests swap the clock
            queue_stage=self._queue_stage,
            overlap_io=overlap_io,
            retry_backoff_s=retry_backoff_s,
            on_ready=on_ready,
        )
        self._intake_thread: threading.Thread | None = None
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
            intake_thread = threading.Thread(target=self.intake.loop, name="intake", daemon=True)
            self._intake_thread = intake_thread
            intake_thread.start()
            checks["intake"] = lambda: intake_thread.is_alive() or self.intake.stopped.is_set()
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
            self.intake.poll_once(wait_s=min(self.settings.poll_wait_s, 1))
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
        self.intake.stopped.set()
        self._grace_s = grace_s
        if self._stop_seen_at is None:
            self._stop_seen_at = time.monotonic()
        while self.open_jobs() and not self.interrupt_due():
            self.step()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._intake_thread is not None:  # a long poll in flight releases what it gets; closing now hides them
            self._intake_thread.join(self.settings.poll_wait_s + 5)
        self.intake.close()
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
            self.endings.fail(job, classify(exc))
            return
        unique = (key, job.message.message_id)  # received before: it runs alone, sparing its batch-mates
        self.collector.add(Work(job, item, model, unique if job.attempt > 1 else key, key), urgent=urgent)

    # --- compute ---

    def run_batch(self, batch: list[Work]) -> None:
        self.compute.run_batch(batch)
