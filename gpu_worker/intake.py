"""What the intake does with one message before its first stage can be queued: read request.json, fetch and
check its inputs (gpu_worker.inputs), and, for a redelivery, resume from the checkpoint its predecessor left.

Plain functions on a `BlobStore`; the worker decides what each error means for the message (see worker.py).
"""

from __future__ import annotations

import logging

from gpu_worker.inputs import check_prompt_object_size, decode_image
from gpu_worker.jobs import Checkpoint, Job, checkpoint_key
from shared.errors import BadInput, NotFound
from shared.messages import InQueueMessage
from shared.stages import ExecutionRequest
from shared.storage import BlobStore, S3Uri

log = logging.getLogger(__name__)


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
