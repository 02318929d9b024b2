"""The one check every domain applies to an id taken from a path, query or body before it reaches DynamoDB."""

from __future__ import annotations

import re

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_id(value: str) -> bool:
    """Ids are UUIDs; anything not shaped like an id names nothing (and must not reach DynamoDB's key limits)."""
    return bool(_ID.fullmatch(value))
