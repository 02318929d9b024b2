"""The worker's side of the out-queue contract: started, progress and finished events.

Each event names the execution's owner (request.json's userId) when the worker knows it, so the results consumer
writes the record without reading it first (docs/ops.md, "Write units per execution").
"""

from __future__ import annotations

from shared.messages import ErrorInfo, ExecutionStatus, ExecutionUsage, OutEvent, OutQueueMessage, Progress
from shared.queues import QueueClient


class EventSender:
    def __init__(self, queues: QueueClient, out_queue_url: str) -> None:
        self._queues = queues
        self._url = out_queue_url

    def _send(self, message: OutQueueMessage) -> None:
        self._queues.send(self._url, message.to_json())

    def started(self, execution_id: str, owner: str | None, progress: Progress) -> None:
        self._send(OutQueueMessage(executionId=execution_id, userId=owner, event=OutEvent.STARTED, progress=progress))

    def progress(self, execution_id: str, owner: str | None, progress: Progress) -> None:
        self._send(OutQueueMessage(executionId=execution_id, userId=owner, event=OutEvent.PROGRESS, progress=progress))

    def succeeded(
        self, execution_id: str, owner: str | None, result_uri: str, stages: int, usage: ExecutionUsage | None = None
    ) -> None:
        done = Progress(stage=stages, stages=stages, step=0, steps=0, percent=100)
        self._send(
            OutQueueMessage(
                executionId=execution_id,
                userId=owner,
                event=OutEvent.FINISHED,
                status=ExecutionStatus.SUCCEEDED,
                success=True,
                executionUri=result_uri,
                progress=done,
                usage=usage,
            )
        )

    def failed(
        self, execution_id: str, owner: str | None, code: str, message: str, usage: ExecutionUsage | None = None
    ) -> None:
        self._send(
            OutQueueMessage(
                executionId=execution_id,
                userId=owner,
                event=OutEvent.FINISHED,
                status=ExecutionStatus.FAILED,
                error=ErrorInfo(code=code, message=message),
                usage=usage,
            )
        )

    def cancelled(self, execution_id: str, owner: str | None, usage: ExecutionUsage | None = None) -> None:
        self._send(
            OutQueueMessage(
                executionId=execution_id,
                userId=owner,
                event=OutEvent.FINISHED,
                status=ExecutionStatus.CANCELLED,
                usage=usage,
            )
        )
