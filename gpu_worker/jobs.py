"""An execution as the worker holds it: its message, request, where it is, and what it produced so far.

Pure Python (no torch): rendering a stage's prompt from templates, variables and the previous output.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpu_worker.progress import ProgressThrottle
from gpu_worker.stages import StageItem
from shared.errors import BadInput, DeadlineExceeded
from shared.queues import ReceivedMessage
from shared.stages import OUTPUT_KINDS, ExecutionRequest, ResolvedStage, ResultOutput, render_template


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
    closed: bool = False  # finished, failed, released: nothing more to do
    stage_started_at: float = field(default_factory=time.monotonic)

    @property
    def execution_id(self) -> str:
        return self.request.execution_id

    @property
    def stage(self) -> ResolvedStage:
        return self.request.stages[self.stage_index]

    @property
    def stages(self) -> int:
        return len(self.request.stages)

    @property
    def last_stage(self) -> bool:
        return self.stage_index == self.stages - 1

    def check_deadline(self, now: datetime) -> None:
        deadline = datetime.fromisoformat(self.request.deadline.replace("Z", "+00:00"))
        if now >= deadline:
            raise DeadlineExceeded(f"the execution passed its deadline ({self.request.deadline})")

    def prompt(self) -> str:
        stage = self.stage
        template = stage.body if stage.body is not None else self.referenced_prompts.get(stage.index)
        if template is None:
            raise BadInput(f"stage {stage.index} has no prompt")
        try:
            return render_template(template, self.request.variables, self.previous_text)
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

    def output_kind(self) -> str:
        return OUTPUT_KINDS[self.stage.type]
