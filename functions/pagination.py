"""Lists as API.md has them: `?limit=` (1-100, default 20), an opaque `?cursor=`, newest first.

A cursor is the base64url JSON of the DynamoDB key after which the next page starts. `check_cursor` accepts
only a key of the listing being continued (same partition, the index's key names, string values), so a
cursor the server did not issue for this listing answers 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from aws_lambda_powertools.event_handler.openapi.params import Query

from shared.errors import BadRequest

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=100, description="Page size (1-100)")]
Cursor = Annotated[str | None, Query(max_length=2048, description="nextCursor of the previous page")]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of records, newest first, and the DynamoDB key to continue after it (None at the end)."""

    records: list[T]
    last_key: dict[str, Any] | None


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise BadRequest("invalid cursor") from exc
    if not isinstance(value, dict):
        raise BadRequest("invalid cursor")
    return value


def check_cursor(start: dict[str, Any] | None, key_names: set[str], partition_name: str, partition: str) -> None:
    """Reject a start key that does not continue this listing."""
    if start is None:
        return
    valid = (
        set(start) == key_names
        and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in start.values())
        and start[partition_name]["S"] == partition
    )
    if not valid:
        raise BadRequest("invalid cursor")


def query_page(
    index: Any, partition: str, key_names: tuple[str, ...], limit: int, start: dict[str, Any] | None
) -> Page[Any]:
    """A page of a pynamodb index query, newest first; `key_names` are the table's and the index's keys."""
    # Ask for one more than the page so that the last page has no cursor.
    records = list(
        index.query(partition, scan_index_forward=False, limit=limit + 1, page_size=limit + 1, last_evaluated_key=start)
    )
    if len(records) <= limit:
        return Page(records, None)
    serialized = records[limit - 1].serialize()
    return Page(records[:limit], {name: serialized[name] for name in key_names})
