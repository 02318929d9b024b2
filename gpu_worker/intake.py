"""The intake thread's part of the worker: receive messages and take each one in up to its first queued stage.

`Intake` long-polls only for what will start within about one batch (`room`: at most `max_batch_size` waiting,
within the open-job cap, and only when the running batch ends within `prefetch_horizon_s`), so the rest stays
visible to other workers; it accepts one poll's messages in parallel, so a full queue's first batch is full.
Accepting a message (what each error means for it):
- poison (not an in-queue message): left for the dead-letter queue;
- request.json gone, or the execution cancelled, deleted or final: the message is dropped, nothing runs;
- transient S3/DynamoDB errors: the message is given back for a retry;
- bad or failing input: the execution ends FAILED (BAD_INPUT, INTERNAL, ...);
- else: "started" is reported and its (first unfinished) stage queued for compute.
The plain functions below do the reading: request.json, the inputs (checked by gpu_worker.inputs) and, for a
redelivery, the checkpoint its predecessor left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from gpu_worker.compute import classify, internal_failure
from gpu_worker.endings import Endings
from gpu_worker.heartbeat import HeartbeatThread
from gpu_worker.inputs import check_prompt_object_size, decode_image
from gpu_worker.jobs import Checkpoint, Job, OpenJobs, checkpoint_key
from gpu_worker.progress import ProgressThrottle
from gpu_worker.seams import WorkerIo
from shared.errors import BadInput, NotFound, PoisonMessage, StageFailed, TransientFailure
from shared.messages import InQueueMessage, parse_in_message
from shared.queues import ReceivedMessage
from shared.settings import WorkerSettings
from shared.stages import ExecutionRequest
from shared.storage import BlobStore, S3Uri

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_POLL = 10
ACCEPT_THREADS = 4  # messages of one poll accepted at once


class Intake:
    def __init__(
        self,
        settings: WorkerSettings,
        io_: WorkerIo,
        *,
        heartbeat: HeartbeatThread,
        endings: Endings,
        jobs: OpenJobs,
        waiting: Callable[[], int],
        remaining_s: Callable[[], float | None],
        queue_stage: Callable[[Job], None],
        overlap_io: bool,
        retry_backoff_s: int,
        on_ready: Callable[[], None],
    ) -> None:
        """`waiting`: stages waiting for compute; `remaining_s`: the running batch's time to go (None: not known
        yet); `queue_stage` hands an accepted job's stage to compute; `on_ready` is called after the first poll."""
        self.settings = settings
        self.queues, self.blobs, self.cancellations = io_.queues, io_.blobs, io_.cancellations
        self.heartbeat = heartbeat
        self.endings = endings
        self.jobs = jobs
        self._waiting = waiting
        self._remaining_s = remaining_s
        self._queue_stage = queue_stage
        self.overlap_io = overlap_io
        self.retry_backoff_s = retry_backoff_s
        self._on_ready: Callable[[], None] | None = on_ready
        self.max_open_jobs = max(2 * settings.max_batch_size, 2)
        self.stopped = threading.Event()
        self._accepting = ThreadPoolExecutor(ACCEPT_THREADS, "accept")

    def loop(self) -> None:
        """The intake thread: poll until stopped; a failing poll is logged and retried, never the thread's end."""
        while not self.stopped.is_set():
            try:
                self.poll_once(wait_s=self.settings.poll_wait_s)
            except TransientFailure as exc:
                log.warning("receive failed: %s", exc)
                self.stopped.wait(1.0)
            except Exception:  # a bug in a poll must not end the intake (the watchdog would end the process)
                log.exception("intake failed; polling again")
                self.stopped.wait(1.0)

    def close(self) -> None:
        """After `stopped` was set and the intake thread ended: wait for accepts in flight."""
        self._accepting.shutdown(wait=True)

    def room(self) -> int:
        """How many messages to receive now: what starts within about one batch, within the open-job cap."""
        room = min(self.settings.max_batch_size - self._waiting(), self.max_open_jobs - len(self.jobs))
        if room <= 0:
            return 0
        remaining = self._remaining_s()
        if remaining is None or remaining > self.settings.prefetch_horizon_s:
            return 0  # the running batch is long: others' workers may start these sooner
        return room

    def poll_once(self, wait_s: int) -> int:
        """Receive what fits into the room and accept it; returns how many messages came."""
        room = self.room()
        if room <= 0:
            self.stopped.wait(0.05)
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
        if self.stopped.is_set() and self.overlap_io:
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
        request = self._request(message, parsed)
        if request is None:
            return
        job = Job(message=message, request=request, throttle=ProgressThrottle(self.settings.progress_interval_s))
        self.jobs.add(job)
        self.cancellations.watch(job.execution_id)
        try:
            job.check_deadline(datetime.now(UTC))
            prefetch_inputs(self.blobs, job)
            if job.attempt > 1:  # a predecessor may have finished stages: never compute them twice
                resume(self.blobs, self.settings.results_bucket, job)
        except TransientFailure as exc:
            log.warning("could not fetch inputs of %s: %s", job.execution_id, exc)
            self.endings.release(job, self.retry_backoff_s)
            return
        except StageFailed as exc:
            self.endings.fail(job, exc)
            return
        except Exception as exc:
            log.exception("could not take %s", job.execution_id)
            self.endings.fail(job, classify(exc))
            return
        self.endings.started(job)
        self._queue_stage(job)

    def _request(self, message: ReceivedMessage, parsed: InQueueMessage) -> ExecutionRequest | None:
        """The execution's request, or None when the message was dropped, given back or failed instead."""
        try:
            request = load_request(self.blobs, parsed)
            if self.cancellations.should_skip(request.execution_id):
                log.info("execution %s is cancelled, deleted or final: not started", request.execution_id)
                self.endings.drop(message)
                return None
            return request
        except NotFound:
            log.info("execution %s has no request any more (deleted): not started", parsed.execution_id)
            self.endings.drop(message)
        except TransientFailure as exc:
            log.warning("could not load %s, retrying later: %s", parsed.execution_id, exc)
            self.endings.release_message(message, self.retry_backoff_s)
        except StageFailed as exc:
            self.endings.fail_message(message, parsed.execution_id, exc)
        except Exception as exc:
            log.exception("could not load %s", parsed.execution_id)
            self.endings.fail_message(message, parsed.execution_id, internal_failure(exc))
        return None


def load_request(blobs: BlobStore, message: InQueueMessage) -> ExecutionRequest:
    """request.json of the message's execution; NotFound when deleted, BadInput when not valid."""
    try:
        location = S3Uri.parse(message.res_uri)
    except ValueError as exc:
        raise BadInput(f"resUri is not valid: {exc}") from exc
    raw = blobs.get_json(location.bucket, location.key)
    try:
        request = ExecutionRequest.model_validate(raw)
    except ValueError as exc:
        raise BadInput(f"request.json is not valid: {exc}") from exc
    if request.execution_id != message.execution_id:
        raise BadInput("request.json belongs to another execution")
    return request


def prefetch_inputs(blobs: BlobStore, job: Job) -> None:
    """Prompts by reference and the input image, fetched and checked before the GPU needs them."""
    for stage in job.request.stages:
        if stage.body_uri:
            location = _parse(stage.body_uri, f"stage {stage.index}'s bodyUri")
            check_prompt_object_size(_size_of(blobs, location), f"stage {stage.index}'s prompt")
            job.referenced_prompts[stage.index] = _fetch(blobs, location).decode("utf-8", errors="replace")
    if job.request.image_uri:
        job.input_image = decode_image(_fetch(blobs, _parse(job.request.image_uri, "variables.image")))


def resume(blobs: BlobStore, results_bucket: str, job: Job) -> None:
    """Continue at the first unfinished stage when a predecessor left a checkpoint; else start at stage 0."""
    if job.stages < 2:
        return  # a single stage writes no checkpoint
    try:
        checkpoint = Checkpoint.model_validate(blobs.get_json(results_bucket, checkpoint_key(job.execution_id)))
    except NotFound:
        return
    except ValueError as exc:
        log.warning("ignoring the checkpoint of %s: %s", job.execution_id, exc)
        return
    # The previous stage's PNGs (lossless, within the stage limits: decoded as they were computed).
    images = [decode_image(blobs.get_bytes(results_bucket, key)) for key in checkpoint.previous_image_keys()]
    try:
        job.resume(checkpoint, images)
    except ValueError as exc:
        log.warning("ignoring the checkpoint of %s: %s", job.execution_id, exc)
        return
    log.info("execution %s resumes at stage %d", job.execution_id, job.stage_index)


def _parse(uri: str, what: str) -> S3Uri:
    try:
        return S3Uri.parse(uri)
    except ValueError as exc:
        raise BadInput(f"{what} is not an s3:// URI") from exc


def _size_of(blobs: BlobStore, location: S3Uri) -> int:
    head = blobs.head(location.bucket, location.key)
    if head is None:
        raise BadInput(f"input {location} does not exist")
    return int(head.get("ContentLength", 0))


def _fetch(blobs: BlobStore, location: S3Uri) -> bytes:
    try:
        return blobs.get_bytes(location.bucket, location.key)
    except NotFound as exc:
        raise BadInput(f"input {location} does not exist") from exc
