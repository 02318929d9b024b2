"""The auth function's collaborators, built on first use from the current settings (never at import), and
again only when the settings object changes (tests swap it), so warm invocations reuse connections."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from functions.bound import current_settings

if TYPE_CHECKING:
    from functions.auth.logic import AuthDeps

_lock = threading.Lock()
_current: AuthDeps | None = None


def auth_deps() -> AuthDeps:
    """The process's collaborators for the settings now in force (the records bound to their tables)."""
    from functions.auth.logic import AuthDeps
    from functions.auth.store import DynamoSessionStore, DynamoThrottleStore, DynamoUserStore

    global _current
    settings = current_settings()
    with _lock:
        if _current is None or _current.settings is not settings:
            _current = AuthDeps(
                settings=settings,
                users=DynamoUserStore(),
                sessions=DynamoSessionStore(),
                throttles=DynamoThrottleStore(),
            )
        return _current
