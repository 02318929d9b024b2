"""The auth function's collaborators, built on first use from the current settings (never at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.bound import PerSettings

if TYPE_CHECKING:
    from functions.auth.logic import AuthDeps
    from shared.settings import Settings


def _build(settings: Settings) -> AuthDeps:
    from functions.auth.logic import AuthDeps
    from functions.auth.store import DynamoSessionStore, DynamoThrottleStore, DynamoUserStore

    return AuthDeps(
        settings=settings, users=DynamoUserStore(), sessions=DynamoSessionStore(), throttles=DynamoThrottleStore()
    )


_deps = PerSettings(_build)


def auth_deps() -> AuthDeps:
    """The process's collaborators for the settings now in force (the records bound to their tables)."""
    return _deps.get()
