"""The settings now in force, with the pynamodb records bound to their tables once per settings object.

Handlers call `current_settings()` on each request: the first call (and any call after the settings object
changed, as tests do) binds the records; warm invocations pay nothing. The settings and the records are
imported by that first call too, not at import: `shared.models` brings in pynamodb and botocore, about 100 ms
of every cold start.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

_lock = threading.Lock()
_bound: Settings | None = None


def current_settings() -> Settings:
    from shared.settings import get_settings

    global _bound
    settings = get_settings()
    with _lock:
        if _bound is not settings:
            from shared.models import bind_models

            bind_models(settings)
            _bound = settings
    return settings
