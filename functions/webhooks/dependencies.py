"""The collaborators of the webhook code, built on first use from the current settings (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from functions.bound import PerSettings
from functions.webhooks import address

if TYPE_CHECKING:
    from functions.executions.store import ExecutionStore
    from functions.webhooks.store import WebhookStore
    from shared.queues import QueueClient
    from shared.settings import Settings


@dataclass(frozen=True)
class WebhookDeps:
    settings: Settings
    store: WebhookStore
    executions: ExecutionStore
    queues: QueueClient
    resolver: address.Resolver | None = None  # None: the system's, looked up at call time (tests replace it)

    def resolve(self, host: str, port: int) -> list[str]:
        return (self.resolver or address.system_resolver)(host, port)


def _build(settings: Settings) -> WebhookDeps:
    from functions.executions.store import ExecutionStore
    from functions.webhooks.store import WebhookStore
    from shared.aws import client
    from shared.queues import QueueClient

    return WebhookDeps(
        settings=settings,
        store=WebhookStore(),
        executions=ExecutionStore(),
        queues=QueueClient(client("sqs", settings)),
    )


_deps = PerSettings(_build)


def webhook_deps() -> WebhookDeps:
    """The process's collaborators for the settings now in force (rebuilt when tests swap the settings)."""
    return _deps.get()
