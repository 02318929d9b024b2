"""In-memory queues, blobs, execution records and stage runners for driving a Worker with no network or model."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from PIL import Image

from gpu_worker.stages import StageCancelled, StageItem, StageOutput
from shared.errors import NotFound
from shared.queues import ReceivedMessage
from shared.storage import S3Uri

IN_QUEUE = "in-queue"
OUT_QUEUE = "out-queue"


class FakeQueues:
    def __init__(self) -> None:
        self.incoming: list[ReceivedMessage] = []
        self.sent: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []

    def put(self, body: str, receive_count: int = 1) -> ReceivedMessage:
        message = ReceivedMessage(str(uuid.uuid4()), f"receipt-{uuid.uuid4()}", body, receive_count)
        self.incoming.append(message)
        return message

    def send(self, queue_url: str, body: str) -> str:
        assert queue_url == OUT_QUEUE
        self.sent.append(json.loads(body))
        return str(uuid.uuid4())

    def receive(self, queue_url: str, *, max_messages: int = 1, wait_s: int = 20) -> list[ReceivedMessage]:
        taken, self.incoming = self.incoming[:max_messages], self.incoming[max_messages:]
        return taken

    def delete(self, queue_url: str, receipt_handle: str) -> None:
        self.deleted.append(receipt_handle)

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        self.visibility.append((receipt_handle, timeout_s))

    def finished(self) -> dict[str, dict[str, Any]]:
        """executionId -> its finished event."""
        return {event["executionId"]: event for event in self.sent if event["event"] == "finished"}


class FakeBlobs:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> S3Uri:
        self.objects[(bucket, key)] = data
        return S3Uri(bucket, key)

    def put_json(self, bucket: str, key: str, value: Any) -> S3Uri:
        text = value if isinstance(value, str) else json.dumps(value)
        return self.put_bytes(bucket, key, text.encode(), "application/json")

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return self.objects[(bucket, key)]
        except KeyError:
            raise NotFound(f"s3://{bucket}/{key}") from None

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.get_bytes(bucket, key))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        data = self.objects.get((bucket, key))
        return None if data is None else {"ContentLength": len(data)}

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        doomed = [k for k in self.objects if k[0] == bucket and k[1].startswith(prefix)]
        for key in doomed:
            del self.objects[key]
        return len(doomed)

    def keys(self, bucket: str) -> set[str]:
        return {key for b, key in self.objects if b == bucket}


class FakeRecords:
    """Execution records as the worker reads them: which to skip at intake and which to stop while running."""

    alive = True

    def __init__(self) -> None:
        self.skip: set[str] = set()
        self.stopping: set[str] = set()
        self.deleted: set[str] = set()  # CONTRACTS C2: seen by the check right before writing

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def watch(self, execution_id: str) -> None:
        pass

    def should_skip(self, execution_id: str) -> bool:
        return execution_id in self.skip

    def should_stop(self, execution_id: str) -> bool:
        return execution_id in self.stopping

    def stop_now(self, execution_id: str) -> bool:
        return execution_id in self.stopping or execution_id in self.deleted

    def forget(self, execution_id: str) -> None:
        pass


class FakeRegistry:
    device = "cpu"

    def is_loaded(self, name: str) -> bool:
        return True

    def warm_up(self) -> None:
        pass


class ScriptedRunner:
    """A stage runner whose behaviour per batch is a function of the batch's prompts; records every call."""

    def __init__(self, behaviour: Callable[[list[str]], None] | None = None, kind: str = "image") -> None:
        self.behaviour = behaviour or (lambda prompts: None)
        self.kind = kind
        self.calls: list[list[str]] = []

    def warm_up_parameters(self) -> dict[str, Any]:
        return {}

    def run(self, items: list[StageItem], model: str, registry: Any, hooks: Any) -> list[StageOutput]:
        prompts = [item.prompt for item in items]
        self.calls.append(prompts)
        for step in (1, 2):  # as the diffusers step callback does: report, then check for cancellation
            if step == 2:
                self.behaviour(prompts)
            hooks.on_step(step, 2)
            if hooks.should_stop():
                raise StageCancelled
        if self.kind == "text":
            return [StageOutput(texts=[f"text for {item.prompt}"]) for item in items]
        return [StageOutput(images=[Image.new("RGB", (8, 8), (len(item.prompt) % 255, 0, 0))]) for item in items]
