"""The settings now in force, with the pynamodb records bound to their tables once per settings object.

Handlers call `current_settings()` on each request: the first call (and any call after the settings object
changed, as tests do) binds the records; warm invocations pay nothing. The settings and the records are
imported by that first call too, not at import: `shared.models` brings in pynamodb and botocore, about 100 ms
of every cold start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from shared.settings import Settings

T = TypeVar("T")

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


class PerSettings(Generic[T]):
    """A function's collaborators (stores, clients), built on first use from the settings in force, with the
    records bound, and built again only when the settings object changes (tests swap it), so warm invocations
    reuse their connections."""

    def __init__(self, build: Callable[[Settings], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._value: T | None = None

    def get(self) -> T:
        settings = current_settings()
        with self._lock:
            if self._value is None or self._settings is not settings:
                self._value, self._settings = self._build(settings), settings
            return self._value
