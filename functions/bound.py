"""The settings now in force, with the pynamodb records bound to their tables once per settings object.

Handlers call `current_settings()` on each request: the first call (and any call after the settings object
changed, as tests do) binds the records; warm invocations pay nothing.
"""

from __future__ import annotations

import threading

from shared.models import bind_models
from shared.settings import Settings, get_settings

_lock = threading.Lock()
_bound: Settings | None = None


def current_settings() -> Settings:
    global _bound
    settings = get_settings()
    with _lock:
        if _bound is not settings:
            bind_models(settings)
            _bound = settings
    return settings
