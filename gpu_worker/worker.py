"""The worker loop: long-poll, prefetch, batch, compute, upload, report; one process per GPU.

Three kinds of thread keep the GPU busy (DESIGN.md, "GPU efficiency"):
- intake: receives up to 10 messages per long poll, loads request.json and inputs, queues the first stage;
- compute (the caller's thread): takes batches of the same key from the collector and runs the model;
- uploads and events: encode and upload outputs, write result.json, send events, delete messages.
With `overlap_io=False` everything runs in the compute thread, one step after another (the naive worker the
benchmarks compare against). In production the clients given here are proxies to the I/O process
(aws_io.py), so botocore's own Python runs there and these threads hardly ever hold the GIL.

Failures: bad input, out-of-memory and deadlines fail the execution at once (finished FAILED); transient
errors (S3, SQS, DynamoDB) release the message for a retry; an unexpected error releases it too, so a
persistent one ends in the DLQ, whose handler marks the execution FAILED. A poison message is left alone
for the same reason. Duplicate deliveries write the same keys, result.json last, and the results consumer
keeps the first final state.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpu_worker.batching import BatchCollector
from gpu_worker.cancellation import ExecutionRecords
from gpu_worker.events import EventSender
from gpu_worker.heartbeat import HeartbeatThread
from gpu_worker.jobs import Job
from gpu_worker.metrics import NullMetrics
from gpu_worker.progress import ProgressThrottle, overall_progress
from gpu_worker.stages import StageCancelled, StageItem, StageOutput, batch_key, model_for, runner_for
from shared.aws import client
from shared.errors import BadInput, NotFound, OutOfMemory, PoisonMessage, StageFailed, StagehubError, TransientFailure
from shared.messages import InQueueMessage, parse_in_message, utc_now_iso
from shared.queues import QueueClient, ReceivedMessage
from shared.settings import WorkerSettings
from shared.stages import ExecutionRequest, ResultManifest, ResultOutput, execution_prefix, manifest_key
from shared.storage import BlobStore, S3Uri

if TYPE_CHECKING:
    from gpu_worker.aws_io import AwsIoProcess

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 10  # visibility given back to a message released after a transient failure
MAX_MESSAGES_PER_POLL = 10
ACCEPT_THREADS = 4  # messages of one poll accepted at once


def worker_io(settings: WorkerSettings, aws_io: AwsIoProcess | None = None) -> dict[str, Any]:
    """A Worker's `blobs`, `queues` and `records`, their calls made by `aws_io` when given (as
    gpu_worker.process runs it), else by clients in this process."""

    def aws(service: str) -> Any:
        return aws_io.client(service) if aws_io is not None else client(service, settings)

    return {
        "blobs": BlobStore(aws("s3")),
        "queues": QueueClient(aws("sqs")),
        "records": ExecutionRecords(aws("dynamodb"), settings.executions_table),
    }


@dataclass(frozen=True)
class Work:
    """One job's current stage, ready to batch."""

    job: Job
    item: StageItem
    model: str
    key: Any


class _Inline:
    """An executor that runs each task at once in the caller's thread (the naive, non-overlapped worker)."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # a task's own errors are logged by the task
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


class _BatchHooks:
    """Step reports and cancellation checks for one batched model call."""

    def __init__(self, worker: Worker, batch: list[Work]) -> None:
        self._worker = worker
        self._batch = batch

    def on_step(self, step: int, steps: int) -> None:
        for work in self._batch:
            job = work.job
            if job.throttle.allow():
                self._worker.report_progress(job, step, steps)

    def should_stop(self) -> bool:
        for work in self._batch:
            if not work.job.cancelled and self._worker.records.should_stop(work.job.execution_id):
                work.job.cancelled = True
        return all(work.job.cancelled for work in self._batch)


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        blobs: BlobStore,
        queues: QueueClient,
        registry: Any = None,
        records: ExecutionRecords | None = None,
        visibility_s: int = 300,
        overlap_io: bool = True,
        retry_backoff_s: int = RETRY_BACKOFF_S,
        metrics: Any = None,
        on_busy_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.queues = queues
        self.records = records or ExecutionRecords(client("dynamodb", settings), settings.executions_table)
        self._registry = registry
        self.events = EventSender(queues, settings.out_queue_url)
        self.collector: BatchCollector[Work] = BatchCollector(
            lambda work: work.key, window_s=settings.batch_window_ms / 1000, max_size=settings.max_batch_size
        )
        self.heartbeat = HeartbeatThread(queues, settings.in_queue_url, visibility_s)
        self.overlap_io = overlap_io
        self.retry_backoff_s = retry_backoff_s
        self.capacity = max(2 * settings.max_batch_size, 2)
        self._uploads: Any = ThreadPoolExecutor(1, "uploads") if overlap_io else _Inline()
        self._notices: Any = ThreadPoolExecutor(1, "events") if overlap_io else _Inline()
        self._accepting = ThreadPoolExecutor(ACCEPT_THREADS, "accept")
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._intake_stop = threading.Event()
        self._intake: threading.Thread | None = None
        self.finished = 0  # executions closed for good (succeeded, failed, cancelled, skipped)
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.on_busy_change = on_busy_change
        self._busy = False  # as last reported to on_busy_change
        self._busy_lock = threading.Lock()  # orders the reports; taken before _jobs_lock, never inside it

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from gpu_worker.models import ModelRegistry

            self._registry = ModelRegistry(self.settings, self.blobs)
        return self._registry

    # --- lifecycle ---

    def start(self) -> None:
        self.heartbeat.start()
        self.records.start()
        if self.overlap_io:
            self._intake = threading.Thread(target=self._intake_loop, name="intake", daemon=True)
            self._intake.start()

    def run(self, stop: threading.Event, grace_s: float = 30.0) -> None:
        """Work until `stop` is set; then finish what completes within `grace_s` and release the rest."""
        self.start()
        while not stop.is_set():
            self.step()
        self.shutdown(grace_s)

    def step(self, timeout_s: float = 0.2) -> bool:
        """One round of the compute loop (polling first when not overlapped); True if a batch ran."""
        if not self.overlap_io and len(self.collector) == 0:
            self.poll_once(wait_s=min(self.settings.poll_wait_s, 1))
        batch = self.collector.next_batch(timeout_s)
        if batch:
            self.run_batch(batch)
        return bool(batch)

    def open_jobs(self) -> int:
        with self._jobs_lock:
            return len(self._jobs)

    def _report_busy(self) -> None:
        """After jobs were added or removed: report 0 -> some open jobs (True) and some -> 0 (False)."""
        if self.on_busy_change is None:
            return
        with self._busy_lock:
            busy = self.open_jobs() > 0
            if busy == self._busy:
                return
            self._busy = busy
            try:
                self.on_busy_change(busy)
            except Exception:
                log.exception("busy-change callback failed")

    def shutdown(self, grace_s: float = 30.0) -> None:
        self._intake_stop.set()
        deadline = time.monotonic() + grace_s
        while self.open_jobs() and time.monotonic() < deadline:
            self.step()
        if self._intake is not None:  # a long poll in flight releases what it gets; closing now would hide them
            self._intake.join(self.settings.poll_wait_s + 5)
        self._accepting.shutdown(wait=True)
        for work in self.collector.drain():
            self._release(work.job, 0)
        self._uploads.shutdown(wait=True)
        self._notices.shutdown(wait=True)
        with self._jobs_lock:
            remaining = list(self._jobs.values())
        for job in remaining:  # still uploading when the grace ran out
            self._release(job, 0)
        self.heartbeat.stop()
        self.records.stop()

    # --- intake ---

    def _intake_loop(self) -> None:
        while not self._intake_stop.is_set():
            try:
                if not self.poll_once(wait_s=self.settings.poll_wait_s):
                    continue
            except TransientFailure as exc:
                log.warning("receive failed: %s", exc)
                self._intake_stop.wait(1.0)

    def poll_once(self, wait_s: int) -> int:
        """Receive what fits into the free capacity and accept it; returns how many messages came."""
        room = self.capacity - self.open_jobs()
        if room <= 0:
            self._intake_stop.wait(0.05)
            return 0
        messages = self.queues.receive(
            self.settings.in_queue_url, max_messages=min(MAX_MESSAGES_PER_POLL, room), wait_s=wait_s
        )
        if self.overlap_io and len(messages) > 1:
            # In parallel (each accept waits on S3 and DynamoDB), so one poll's executions meet the batch window.
            list(self._accepting.map(self._accept_unless_stopping, messages))
        else:
            for message in messages:
                self._accept_unless_stopping(message)
        return len(messages)

    def _accept_unless_stopping(self, message: ReceivedMessage) -> None:
        if self._intake_stop.is_set() and self.overlap_io:
            self.queues.change_visibility(self.settings.in_queue_url, message.receipt_handle, 0)
            return
        self.accept(message)

    def accept(self, message: ReceivedMessage) -> None:
        """Take one in-queue message: load its request and inputs, report started, queue its first stage."""
        try:
            parsed = parse_in_message(message.body)
        except PoisonMessage as exc:
            log.error("poison message %s left for the dead-letter queue: %s", message.message_id, exc)
            return
        self.heartbeat.track(message.message_id, message.receipt_handle)
        try:
            request = self._load_request(parsed)
            if self.records.should_skip(request.execution_id):
                log.info("execution %s is cancelled or deleted: not started", request.execution_id)
                self._drop(message)
                return
        except NotFound:
            log.info("execution %s has no request any more (deleted): not started", parsed.execution_id)
            self._drop(message)
            return
        except TransientFailure as exc:
            log.warning("could not load %s, retrying later: %s", parsed.execution_id, exc)
            self._release_message(message, self.retry_backoff_s)
            return
        except StageFailed as exc:
            self._notices.submit(self._close_failed_message, message, parsed.execution_id, exc)
            return
        job = Job(message=message, request=request, throttle=ProgressThrottle(self.settings.progress_interval_s))
        with self._jobs_lock:
            self._jobs[job.execution_id] = job
        self.records.watch(job.execution_id)
        self._report_busy()
        try:
            job.check_deadline(datetime.now(UTC))
            self._prefetch_inputs(job)
        except TransientFailure as exc:
            log.warning("could not fetch inputs of %s: %s", job.execution_id, exc)
            self._release(job, self.retry_backoff_s)
            return
        except StageFailed as exc:
            self.fail(job, exc)
            return
        job.throttle.allow(force=True)  # "started" carries progress 0: the next progress event is due a second later
        self._notices.submit(self._send, self.events.started, job.execution_id, overall_progress(0, job.stages, 0, 0))
        self._queue_stage(job)

    def _load_request(self, parsed: InQueueMessage) -> ExecutionRequest:
        location = S3Uri.parse(parsed.res_uri)
        raw = self.blobs.get_json(location.bucket, location.key)
        try:
            request = ExecutionRequest.model_validate(raw)
        except ValueError as exc:
            raise BadInput(f"request.json is not valid: {exc}") from exc
        if request.execution_id != parsed.execution_id:
            raise BadInput("request.json belongs to another execution")
        return request

    def _prefetch_inputs(self, job: Job) -> None:
        """Prompts by reference and the input image, fetched before the GPU needs them."""
        for stage in job.request.stages:
            if stage.body_uri:
                location = S3Uri.parse(stage.body_uri)
                job.referenced_prompts[stage.index] = self._fetch_bytes(location).decode("utf-8", errors="replace")
        if job.request.image_uri:
            job.input_image = _decode_image(self._fetch_bytes(S3Uri.parse(job.request.image_uri)))

    def _fetch_bytes(self, location: S3Uri) -> bytes:
        try:
            return self.blobs.get_bytes(location.bucket, location.key)
        except NotFound as exc:
            raise BadInput(f"input {location} does not exist") from exc

    def _queue_stage(self, job: Job, *, urgent: bool = False) -> None:
        try:
            job.check_deadline(datetime.now(UTC))
            item = job.stage_item()
            model = model_for(self.settings, job.stage.type, item.params.get("model"))
        except StageFailed as exc:
            self.fail(job, exc)
            return
        job.stage_started_at = time.monotonic()
        self.collector.add(Work(job, item, model, batch_key(job.stage.type, model, item)), urgent=urgent)

    # --- compute ---

    def run_batch(self, batch: list[Work]) -> None:
        live = []
        for work in batch:
            if self.records.should_stop(work.job.execution_id):
                self.cancel(work.job)
            else:
                live.append(work)
        if not live:
            return
        stage_type = live[0].job.stage.type
        started = time.monotonic()
        try:
            outputs = runner_for(stage_type).run(
                [w.item for w in live], live[0].model, self.registry, _BatchHooks(self, live)
            )
        except StageCancelled:
            for work in live:
                self.cancel(work.job)
            return
        except OutOfMemory as exc:
            out_of_memory = exc
            self._retry_singly_or(live, lambda job: self.fail(job, out_of_memory))
            return
        except StageFailed as exc:
            for work in live:
                self.fail(work.job, exc)
            return
        except TransientFailure as exc:
            log.warning("transient failure in a %s batch: %s", stage_type, exc)
            for work in live:
                self._release(work.job, self.retry_backoff_s)
            return
        except Exception:
            log.exception("unexpected failure in a %s batch of %d", stage_type, len(live))
            self._retry_singly_or(live, lambda job: self._release(job, self.retry_backoff_s))
            return
        self.metrics.record_batch(stage_type, (time.monotonic() - started) * 1000, len(live))
        for work, output in zip(live, outputs, strict=True):
            if work.job.cancelled:
                self.cancel(work.job)
            else:
                self._stage_done(work.job, output)

    def _retry_singly_or(self, batch: list[Work], otherwise: Any) -> None:
        """A batch that failed as a whole runs again item by item, so one item cannot fail the others."""
        if len(batch) > 1:
            for work in batch:
                self.run_batch([work])
        else:
            otherwise(batch[0].job)

    def _stage_done(self, job: Job, output: StageOutput) -> None:
        stage = job.stage
        prefix = execution_prefix(job.execution_id)
        for index, text in enumerate(output.texts):
            job.outputs.append(
                ResultOutput(stage=stage.index, index=index, type="text", contentType="text/plain", text=text)
            )
        for index, image in enumerate(output.images):
            key = f"{prefix}stage-{stage.index}-{index}.png"
            job.outputs.append(
                ResultOutput(stage=stage.index, index=index, type="image", contentType="image/png", key=key)
            )
            self._uploads.submit(self._upload_image, job, key, image)
        job.previous_text = output.texts[0] if output.texts else None
        job.previous_images = list(output.images)
        if job.last_stage:  # the finished event carries 100%
            self._uploads.submit(self._finish, job)
        else:
            self.report_progress(job, 1, 1, force=True)
            job.stage_index += 1
            self._queue_stage(job, urgent=True)

    def report_progress(self, job: Job, step: int, steps: int, *, force: bool = False) -> None:
        if force and not job.throttle.allow(force=True):
            return
        progress = overall_progress(job.stage_index, job.stages, step, steps)
        self._notices.submit(self._send, self.events.progress, job.execution_id, progress)

    # --- endings (run in the uploads/events threads, or inline) ---

    def _upload_image(self, job: Job, key: str, image: Any) -> None:
        if job.closed:
            return
        try:
            self.blobs.put_bytes(self.settings.results_bucket, key, _encode_png(image), "image/png")
            job.written_keys.append(key)
        except TransientFailure as exc:
            log.warning("upload of %s failed: %s", key, exc)
            self._release(job, self.retry_backoff_s)

    def _finish(self, job: Job) -> None:
        if job.closed:
            return
        manifest = ResultManifest(executionId=job.execution_id, outputs=job.outputs, finishedAt=utc_now_iso())
        try:
            uri = self.blobs.put_json(self.settings.results_bucket, manifest_key(job.execution_id), manifest.to_json())
            self.events.succeeded(job.execution_id, str(uri), job.stages)
        except TransientFailure as exc:
            log.warning("could not finish %s: %s", job.execution_id, exc)
            self._release(job, self.retry_backoff_s)
            return
        self._close(job)

    def fail(self, job: Job, error: StagehubError) -> None:
        log.info("execution %s failed: %s %s", job.execution_id, error.code, error.message)
        job.closed = True
        self._uploads.submit(self._end, job, lambda: self.events.failed(job.execution_id, error.code, error.message))

    def cancel(self, job: Job) -> None:
        log.info("execution %s cancelled", job.execution_id)
        job.closed = True
        self._uploads.submit(self._end, job, lambda: self.events.cancelled(job.execution_id))

    def _end(self, job: Job, send_final: Any) -> None:
        """Remove partial outputs (never request.json), send the final event, delete the message."""
        try:
            for key in job.written_keys:
                self.blobs.delete_prefix(self.settings.results_bucket, key)
            send_final()
        except TransientFailure as exc:
            log.warning("could not end %s cleanly, releasing: %s", job.execution_id, exc)
            self._release(job, self.retry_backoff_s)
            return
        self._close(job)

    def _close_failed_message(self, message: ReceivedMessage, execution_id: str, error: StagehubError) -> None:
        self._send(self.events.failed, execution_id, error.code, error.message)
        self._drop(message)

    def _close(self, job: Job) -> None:
        job.closed = True
        self._drop(job.message)
        with self._jobs_lock:
            self._jobs.pop(job.execution_id, None)
        self._report_busy()
        self.records.forget(job.execution_id)

    def _drop(self, message: ReceivedMessage) -> None:
        """Delete a message that needs no more work."""
        try:
            self.queues.delete(self.settings.in_queue_url, message.receipt_handle)
        except TransientFailure as exc:
            log.warning("could not delete message %s (it will come back): %s", message.message_id, exc)
        self.heartbeat.untrack(message.message_id)
        self.finished += 1

    def _release(self, job: Job, visibility_s: int) -> None:
        job.closed = True
        self._release_message(job.message, visibility_s)
        with self._jobs_lock:
            self._jobs.pop(job.execution_id, None)
        self.records.forget(job.execution_id)
        self._report_busy()

    def _release_message(self, message: ReceivedMessage, visibility_s: int) -> None:
        """Give a message back to the queue (after `visibility_s`), to be received again."""
        self.heartbeat.untrack(message.message_id)
        try:
            self.queues.change_visibility(self.settings.in_queue_url, message.receipt_handle, visibility_s)
        except TransientFailure as exc:
            log.warning("could not release message %s: %s", message.message_id, exc)

    @staticmethod
    def _send(send: Any, *args: Any) -> None:
        try:
            send(*args)
        except TransientFailure as exc:  # a lost progress event is harmless: the next one or finished follows
            log.warning("event not sent: %s", exc)


def _encode_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput("variables.image is not an image") from exc
    return image.convert("RGB")
