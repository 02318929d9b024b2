"""The typed seams between the worker's parts, and the bundle of its AWS-facing collaborators.

The worker depends on these shapes, not on the classes behind them: tests drive it with in-memory fakes,
`gpu_worker.process` with the real ones (their AWS calls made by the I/O process, gpu_worker.aws_io).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gpu_worker.cancellation import CancellationWatcher
from shared.aws import client
from shared.queues import QueueClient
from shared.settings import WorkerSettings
from shared.storage import BlobStore

if TYPE_CHECKING:
    from gpu_worker.aws_io import AwsIoProcess


class Registry(Protocol):
    """Loaded models by name (gpu_worker.models.ModelRegistry); the stage runners call its loaders."""

    @property
    def device(self) -> str: ...

    def is_loaded(self, name: str) -> bool: ...

    def warm_up(self) -> None: ...


class Metrics(Protocol):
    """gpu_worker.metrics.WorkerMetrics, or NullMetrics when off."""

    def record_batch(self, stage_type: str, duration_ms: float, batch_size: int) -> None: ...

    def record_failure(self, code: str) -> None: ...


class Cancellations(Protocol):
    """gpu_worker.cancellation.CancellationWatcher: which executions to skip at intake and stop while running."""

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def watch(self, execution_id: str) -> None: ...

    def forget(self, execution_id: str) -> None: ...

    def should_skip(self, execution_id: str) -> bool: ...

    def should_stop(self, execution_id: str) -> bool: ...

    def stop_now(self, execution_id: str) -> bool: ...


class TaskRunner(Protocol):
    """Where endings run: a one-thread pool (overlapped) or inline (the naive worker)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class Inline:
    """A TaskRunner that runs each task at once in the caller's thread (the naive, non-overlapped worker)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # tasks are guarded (Endings); this keeps the executor's contract
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


@dataclass(frozen=True)
class WorkerIo:
    """A worker's S3, SQS and DynamoDB sides."""

    blobs: BlobStore
    queues: QueueClient
    cancellations: Cancellations

    @classmethod
    def build(cls, settings: WorkerSettings, aws_io: AwsIoProcess | None = None) -> WorkerIo:
        """Calls made by `aws_io` when given (as gpu_worker.process runs it), else by clients in this process."""

        def aws(service: str) -> Any:
            return aws_io.client(service) if aws_io is not None else client(service, settings)

        return cls(
            blobs=BlobStore(aws("s3")),
            queues=QueueClient(aws("sqs")),
            cancellations=CancellationWatcher(aws("dynamodb"), settings.executions_table),
        )
