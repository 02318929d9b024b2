"""The DynamoDB edge every store shares: one typed error for a failed call, and the code of a failed condition.

Stores translate pynamodb's exceptions here, so a DynamoDB failure reaches the HTTP layer as 503 with API.md's
body (and a queue consumer as a transient failure: the message is received again), never as a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pynamodb.exceptions import PynamoDBException

from shared.errors import ServiceUnavailable, TransientFailure

CONDITION_FAILED = "ConditionalCheckFailedException"


class StoreUnavailable(ServiceUnavailable, TransientFailure):
    """DynamoDB failed in a way worth retrying (throttling, 5xx, network, a transaction conflict)."""


@contextmanager
def dynamodb_errors(what: str) -> Iterator[None]:
    """Any pynamodb failure inside becomes StoreUnavailable, naming `what` was being read or written."""
    try:
        yield
    except PynamoDBException as exc:
        raise StoreUnavailable(f"database error on {what}") from exc
