"""How an execution's work leaves the worker: outputs uploaded, checkpoints and result.json written, events sent,
the message deleted (done) or given back (to be received again).

Uploads and endings run in one "uploads" thread, events in one "events" thread (inline in the naive worker),
so the compute thread never waits on S3 or SQS. Invariants the worker relies on:
- tasks of one thread run in submission order: a stage's images are uploaded before the checkpoint naming
  them, and every stage's before result.json;
- every task is guarded: an exception it did not foresee fails its execution (INTERNAL) instead of vanishing
  in a future, and a failure to fail gives the message back;
- right before writing a stage's outputs or the manifest the execution's record is read again (CONTRACTS C2):
  a deleted, final or cancelled execution writes nothing more and ends CANCELLED;
- an execution is closed once: `job.closed` is set by whoever ends it first, and later endings do nothing.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpu_worker.events import EventSender
from gpu_worker.heartbeat import HeartbeatThread
from gpu_worker.jobs import Checkpoint, Job, OpenJobs, checkpoint_key
from gpu_worker.progress import overall_progress
from gpu_worker.seams import Inline, Metrics, TaskRunner, WorkerIo
from shared.errors import InternalFailure, StagehubError, TransientFailure
from shared.messages import utc_now_iso
from shared.queues import ReceivedMessage
from shared.settings import WorkerSettings
from shared.stages import ResultManifest, manifest_key

log = logging.getLogger("gpu_worker.worker")


class Endings:
    def __init__(
        self,
        settings: WorkerSettings,
        io_: WorkerIo,
        heartbeat: HeartbeatThread,
        jobs: OpenJobs,
        metrics: Metrics,
        *,
        overlap_io: bool,
        retry_backoff_s: int,
        on_closed: Callable[[Job], None] | None = None,
    ) -> None:
        self._settings = settings
        self._blobs = io_.blobs
        self._queues = io_.queues
        self._cancellations = io_.cancellations
        self._events = EventSender(io_.queues, settings.out_queue_url)
        self._heartbeat = heartbeat
        self._jobs = jobs
        self._metrics = metrics
        self._retry_backoff_s = retry_backoff_s
        self._on_closed = on_closed
        self._uploads: TaskRunner = ThreadPoolExecutor(1, "uploads") if overlap_io else Inline()
        self._notices: TaskRunner = ThreadPoolExecutor(1, "events") if overlap_io else Inline()

    def shutdown(self) -> None:
        self._uploads.shutdown(wait=True)
        self._notices.shutdown(wait=True)

    # --- what the compute loop hands over ---

    def started(self, job: Job) -> None:
        job.throttle.allow(force=True)  # "started" carries progress 0: the next progress event is due a second later
        progress = overall_progress(job.stage_index, job.stages, 0, 0)
        self._notices.submit(self._send, self._events.started, job.execution_id, job.owner, progress)
        log.info(
            json.dumps(
                {
                    "event": "execution.started",
                    "executionId": job.execution_id,
                    "stages": job.stages,
                    "fromStage": job.stage_index,
                    "attempt": job.attempt,
                }
            )
        )

    def progress(self, job: Job, step: int, steps: int, *, force: bool = False) -> None:
        if force and not job.throttle.allow(force=True):
            return
        progress = overall_progress(job.stage_index, job.stages, step, steps)
        self._notices.submit(self._send, self._events.progress, job.execution_id, job.owner, progress)

    def stage_done(self, job: Job, images: list[tuple[str, Any]], checkpoint: Checkpoint) -> None:
        """A stage before the last: upload its images, then the checkpoint a redelivery resumes from."""
        self._submit(job, self._write_stage, job, images, checkpoint)

    def finish(self, job: Job, images: list[tuple[str, Any]]) -> None:
        """The last stage: its images, result.json, finished SUCCEEDED, the message deleted."""
        self._submit(job, self._finish, job, images)

    def fail(self, job: Job, error: StagehubError) -> None:
        if job.closed:
            return
        log.info("execution %s failed: %s %s", job.execution_id, error.code, error.message)
        job.closed = True
        self._metrics.record_failure(error.code)
        usage = job.usage()
        self._uploads.submit(
            self._guarded_end,
            job,
            lambda: self._events.failed(job.execution_id, job.owner, error.code, error.message, usage),
            f"FAILED {error.code}",
        )

    def cancel(self, job: Job) -> None:
        if job.closed:
            return
        log.info("execution %s cancelled", job.execution_id)
        job.closed = True
        usage = job.usage()
        self._uploads.submit(
            self._guarded_end, job, lambda: self._events.cancelled(job.execution_id, job.owner, usage), "CANCELLED"
        )

    def release(self, job: Job, visibility_s: int) -> None:
        """Give the job's message back (received again after `visibility_s`); the job is no longer ours."""
        job.closed = True
        self.release_message(job.message, visibility_s)
        self._forget(job, f"RELEASED after {visibility_s} s")

    def release_message(self, message: ReceivedMessage, visibility_s: int) -> None:
        self._heartbeat.untrack(message.message_id)
        try:
            self._queues.change_visibility(self._settings.in_queue_url, message.receipt_handle, visibility_s)
        except TransientFailure as exc:
            log.warning("could not release message %s: %s", message.message_id, exc)

    def fail_message(self, message: ReceivedMessage, execution_id: str, error: StagehubError) -> None:
        """A message whose request could not even be read: finished FAILED, then deleted."""
        self._metrics.record_failure(error.code)

        def end() -> None:
            try:
                self._send(self._events.failed, execution_id, None, error.code, error.message)
                self.drop(message)
            except Exception:  # it comes back, and after maxReceiveCount the DLQ handler fails it
                log.exception("could not end message %s", message.message_id)

        self._notices.submit(end)

    def drop(self, message: ReceivedMessage) -> None:
        """Delete a message that needs no more work."""
        try:
            self._queues.delete(self._settings.in_queue_url, message.receipt_handle)
        except TransientFailure as exc:
            log.warning("could not delete message %s (it will come back): %s", message.message_id, exc)
        self._heartbeat.untrack(message.message_id)

    # --- the tasks (uploads thread, or inline) ---

    def _submit(self, job: Job, task: Callable[..., None], *args: Any) -> None:
        self._uploads.submit(self._guarded, job, task, *args)

    def _guarded(self, job: Job, task: Callable[..., None], *args: Any) -> None:
        if job.closed:
            return
        try:
            task(*args)
        except TransientFailure as exc:
            log.warning("could not write %s's outputs, releasing it: %s", job.execution_id, exc)
            self.release(job, self._retry_backoff_s)
        except Exception as exc:
            log.exception("unexpected failure writing %s's outputs", job.execution_id)
            self.fail(job, InternalFailure(f"the worker failed writing the outputs ({type(exc).__name__})"))

    def _stopped_before_writing(self, job: Job) -> bool:
        """CONTRACTS C2: nothing is written for an execution deleted (or cancelled, or ended) meanwhile."""
        if self._cancellations.stop_now(job.execution_id):
            job.cancelled = True
            self.cancel(job)
            return True
        return False

    def _write_stage(self, job: Job, images: list[tuple[str, Any]], checkpoint: Checkpoint) -> None:
        if self._stopped_before_writing(job):
            return
        self._upload_images(job, images)
        key = checkpoint_key(job.execution_id)
        self._blobs.put_json(self._settings.results_bucket, key, checkpoint.to_json())
        if key not in job.written_keys:
            job.written_keys.append(key)

    def _upload_images(self, job: Job, images: list[tuple[str, Any]]) -> None:
        for key, image in images:
            self._blobs.put_bytes(self._settings.results_bucket, key, encode_png(image), "image/png")
            job.written_keys.append(key)

    def _finish(self, job: Job, images: list[tuple[str, Any]]) -> None:
        if self._stopped_before_writing(job):
            return
        self._upload_images(job, images)
        manifest = ResultManifest(executionId=job.execution_id, outputs=job.outputs, finishedAt=utc_now_iso())
        bucket = self._settings.results_bucket
        uri = self._blobs.put_json(bucket, manifest_key(job.execution_id), manifest.to_json())
        self._events.succeeded(job.execution_id, job.owner, str(uri), job.stages, job.usage())
        if job.stages > 1:  # its work is done: result.json names every output
            self._delete_quietly(bucket, checkpoint_key(job.execution_id))
        self._close(job, "SUCCEEDED")

    def _guarded_end(self, job: Job, send_final: Callable[[], None], outcome: str) -> None:
        """Remove partial outputs (never request.json), send the final event, delete the message."""
        try:
            for key in job.written_keys:
                self._blobs.delete_prefix(self._settings.results_bucket, key)
            send_final()
        except Exception as exc:  # transient or not: the message comes back, and after maxReceiveCount the DLQ
            log.warning("could not end %s cleanly, releasing: %s", job.execution_id, exc)
            self.release_message(job.message, self._retry_backoff_s)
            self._forget(job, f"RELEASED ({outcome} not sent)")
            return
        self._close(job, outcome)

    def _delete_quietly(self, bucket: str, key: str) -> None:
        try:
            self._blobs.delete_prefix(bucket, key)
        except TransientFailure as exc:  # expires with the results bucket's lifecycle
            log.warning("could not delete %s: %s", key, exc)

    def _close(self, job: Job, outcome: str) -> None:
        job.closed = True
        self.drop(job.message)
        self._forget(job, outcome)
        if self._on_closed is not None:
            self._on_closed(job)

    def _forget(self, job: Job, outcome: str) -> None:
        self._jobs.remove(job)
        self._cancellations.forget(job.execution_id)
        usage = job.usage()
        log.info(
            json.dumps(
                {
                    "event": "execution.ended",
                    "executionId": job.execution_id,
                    "outcome": outcome,
                    "stages": job.stages,
                    "fromStage": job.resumed_at,
                    "attempt": job.attempt,
                    "seconds": round(time.monotonic() - job.accepted_at, 3),
                    "gpuSeconds": usage.gpu_seconds,
                    "stageSeconds": [s.seconds for s in usage.stages],
                }
            )
        )

    @staticmethod
    def _send(send: Callable[..., None], *args: Any) -> None:
        try:
            send(*args)
        except TransientFailure as exc:  # a lost progress event is harmless: the next one or finished follows
            log.warning("event not sent: %s", exc)
        except Exception:
            log.exception("event not sent")


def encode_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
