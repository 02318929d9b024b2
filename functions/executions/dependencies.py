"""The collaborators of the executions functions, built once per process from the current settings.

Binding the pynamodb records and creating clients happens on first use (never at import), and again only when
the settings object changes (tests swap it), so warm invocations reuse connections. The modules that build
them (the domain logic, pynamodb, botocore) are imported then too, which keeps cold imports short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.bound import PerSettings

if TYPE_CHECKING:
    from functions.executions.logic import ExecutionDeps
    from shared.settings import Settings


def _build(settings: Settings) -> ExecutionDeps:
    from functions.executions.backends import BackendStats
    from functions.executions.logic import ExecutionDeps
    from functions.executions.store import ExecutionStore
    from shared.aws import client
    from shared.queues import QueueClient
    from shared.storage import BlobStore

    queues = QueueClient(client("sqs", settings))
    return ExecutionDeps(
        settings=settings,
        store=ExecutionStore(),
        blobs=BlobStore(client("s3", settings)),
        queues=queues,
        backends=BackendStats(settings, queues, lambda: client("cloudwatch", settings)),
    )


_deps = PerSettings(_build)


def execution_deps() -> ExecutionDeps:
    """The process's collaborators for the settings now in force."""
    return _deps.get()
