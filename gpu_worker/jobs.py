"""An execution as the worker holds it: its message, request, where it is, and what it produced so far.

Pure Python (no torch): rendering a stage's prompt from templates, variables and the previous output (bounded,
see gpu_worker.inputs), the device time each stage used, and the checkpoint a redelivery resumes from.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpu_worker.inputs import render_bounded
from gpu_worker.progress import ProgressThrottle
from gpu_worker.stages import StageItem
from shared.errors import BadInput, DeadlineExceeded
from shared.messages import ExecutionUsage, StageUsage
from shared.queues import ReceivedMessage
from shared.stages import ExecutionRequest, ResolvedStage, ResultOutput, execution_prefix

log = logging.getLogger(__name__)


def checkpoint_key(execution_id: str) -> str:
    """Where a multi-stage execution notes its finished stages (removed once result.json is written)."""
    return f"{execution_prefix(execution_id)}checkpoint.json"


class Checkpoint(BaseModel):
    """What a redelivered execution needs to resume at `nextStage`: the outputs so far (images by key, already
    uploaded before this was written), the last text, and the device time of the finished stages."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: Literal[1] = 1
    execution_id: str = Field(alias="executionId")
    next_stage: int = Field(alias="nextStage", ge=1)
    outputs: list[ResultOutput]
    previous_text: str | None = Field(default=None, alias="previousText")
    usage: list[StageUsage] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def previous_image_keys(self) -> list[str]:
        """The images of the last finished stage, which the next stage may take as its input."""
        last = self.next_stage - 1
        return [o.key for o in self.outputs if o.stage == last and o.type == "image" and o.key]


def derived_seed(execution_id: str, stage_index: int) -> int:
    """The seed of a stage that names none: fixed per execution and stage, so that a duplicate delivery of the
    same message renders the same outputs (the keys are the same too, so a redelivery can never mix results)."""
    digest = hashlib.sha256(f"{execution_id}:{stage_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # below 2**63, as torch.Generator.manual_seed takes


@dataclass
class Job:
    message: ReceivedMessage
    request: ExecutionRequest
    throttle: ProgressThrottle
    referenced_prompts: dict[int, str] = field(default_factory=dict)  # stage index -> prompt fetched from S3
    input_image: Any = None  # variables.image, fetched ahead
    stage_index: int = 0
    previous_text: str | None = None
    previous_images: list[Any] = field(default_factory=list)
    outputs: list[ResultOutput] = field(default_factory=list)
    written_keys: list[str] = field(default_factory=list)
    cancelled: bool = False
    timed_out: bool = False  # noticed past its deadline during a model call
    closed: bool = False  # finished, failed, released: nothing more to do
    stage_seconds: dict[int, float] = field(default_factory=dict)  # stage index -> device time of its model calls
    resumed_at: int = 0  # the first stage this delivery computes (after a checkpoint)
    accepted_at: float = field(default_factory=time.monotonic)

    @property
    def attempt(self) -> int:
        return self.message.receive_count

    @cached_property
    def deadline(self) -> datetime:
        return datetime.fromisoformat(self.request.deadline.replace("Z", "+00:00"))

    @property
    def execution_id(self) -> str:
        return self.request.execution_id

    @property
    def owner(self) -> str:
        """The user whose execution this is: sent on every event so the results consumer need not read it."""
        return self.request.user_id

    @property
    def stage(self) -> ResolvedStage:
        return self.request.stages[self.stage_index]

    @property
    def stages(self) -> int:
        return len(self.request.stages)

    @property
    def last_stage(self) -> bool:
        return self.stage_index == self.stages - 1

    def past_deadline(self, now: datetime) -> bool:
        return now >= self.deadline

    def check_deadline(self, now: datetime) -> None:
        if self.past_deadline(now):
            raise DeadlineExceeded(f"the execution passed its deadline ({self.request.deadline})")

    def prompt(self) -> str:
        stage = self.stage
        template = stage.body if stage.body is not None else self.referenced_prompts.get(stage.index)
        if template is None:
            raise BadInput(f"stage {stage.index} has no prompt")
        try:
            return render_bounded(template, self.request.variables, self.previous_text)
        except KeyError as exc:
            name = exc.args[0]
            if name == "previous":
                raise BadInput(f"stage {stage.index} uses {{{{previous}}}} but no text came before it") from None
            raise BadInput(f"stage {stage.index} uses {{{{{name}}}}} but the request has no such variable") from None

    def stage_item(self) -> StageItem:
        """The current stage's input: rendered prompt, its parameters, and for img2img its image."""
        image = None
        if self.stage.type == "img2img":
            image = self.previous_images[0] if self.previous_images else self.input_image
            if image is None:
                raise BadInput(f"stage {self.stage.index} (img2img) has no input image")
        params = dict(self.stage.parameters)
        if params.get("seed") is None:
            params["seed"] = derived_seed(self.execution_id, self.stage.index)
        return StageItem(prompt=self.prompt(), params=params, image=image)

    def add_device_time(self, seconds: float) -> None:
        self.stage_seconds[self.stage_index] = self.stage_seconds.get(self.stage_index, 0.0) + seconds

    def usage(self) -> ExecutionUsage:
        stages = [StageUsage(stage=index, seconds=round(s, 4)) for index, s in sorted(self.stage_seconds.items())]
        return ExecutionUsage(gpuSeconds=round(sum(self.stage_seconds.values()), 4), stages=stages)

    def checkpoint(self) -> Checkpoint:
        """After the current stage's outputs: resume at the next stage."""
        return Checkpoint(
            executionId=self.execution_id,
            nextStage=self.stage_index + 1,
            outputs=list(self.outputs),
            previousText=self.previous_text,
            usage=self.usage().stages,
        )

    def resume(self, checkpoint: Checkpoint, previous_images: list[Any]) -> None:
        """Continue from a predecessor's checkpoint: its finished stages are not computed again."""
        if checkpoint.next_stage >= self.stages:
            raise ValueError("the checkpoint is past the last stage")
        self.stage_index = self.resumed_at = checkpoint.next_stage
        self.outputs = list(checkpoint.outputs)
        self.previous_text = checkpoint.previous_text
        self.previous_images = previous_images
        self.stage_seconds = {usage.stage: usage.seconds for usage in checkpoint.usage}
        self.written_keys = [o.key for o in checkpoint.outputs if o.key] + [checkpoint_key(self.execution_id)]


class OpenJobs:
    """The executions this worker holds, by id; reports 0 -> some (busy) and some -> 0 (idle) to `on_busy_change`."""

    def __init__(self, on_busy_change: Callable[[bool], None] | None = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.on_busy_change = on_busy_change
        self._busy = False  # as last reported
        self._busy_lock = threading.Lock()  # orders the reports; taken before _lock, never inside it

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.execution_id] = job
        self._report()

    def remove(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.execution_id) is job:
                del self._jobs[job.execution_id]
        self._report()

    def _report(self) -> None:
        if self.on_busy_change is None:
            return
        with self._busy_lock:
            busy = len(self) > 0
            if busy == self._busy:
                return
            self._busy = busy
            try:
                self.on_busy_change(busy)
            except Exception:
                log.exception("busy-change callback failed")
