"""Typed errors of the domain and the data-access edge, each carrying the API's error code and HTTP status.

Handlers map them to API.md's error body in one place (`functions.http`); the worker classifies its
failures with the worker-side ones (bad input and out-of-memory fail at once; transient ones retry).
"""

from __future__ import annotations

from typing import Any


class StagehubError(Exception):
    """Base of every expected error. `status` and `code` are what the HTTP API answers."""

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body (e.g. `Retry-After`)."""
        return {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(StagehubError):
    status, code = 400, "BAD_REQUEST"


class Unauthorized(StagehubError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(StagehubError):
    status, code = 403, "FORBIDDEN"


class NotFound(StagehubError):
    status, code = 404, "NOT_FOUND"


class Conflict(StagehubError):
    status, code = 409, "CONFLICT"


class PayloadTooLarge(StagehubError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(StagehubError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class ValidationFailed(StagehubError):
    status, code = 422, "VALIDATION_FAILED"


class Throttled(StagehubError):
    """Too many requests: the answer says, in `Retry-After`, how many seconds to wait."""

    status, code = 429, "THROTTLED"

    def __init__(self, message: str, *, retry_after_s: int, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, int(retry_after_s))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QuotaExceeded(StagehubError):
    """A per-user limit is reached (API.md: 429 QUOTA_EXCEEDED with Retry-After, in seconds)."""

    status, code = 429, "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class IdempotencyMismatch(StagehubError):
    """An Idempotency-Key reused with another pipeline or body."""

    status, code = 422, "IDEMPOTENCY_MISMATCH"


class ServiceUnavailable(StagehubError):
    """A dependency (S3, DynamoDB, SQS) failed in a way worth retrying later."""

    status, code = 503, "SERVICE_UNAVAILABLE"


# --- worker-side classification (the code goes into the execution's `error`) ---


class StageFailed(StagehubError):
    """A stage failed for good: the execution becomes FAILED with this code and message."""

    code = "STAGE_FAILED"


class BadInput(StageFailed):
    code = "BAD_INPUT"


class OutOfMemory(StageFailed):
    code = "OUT_OF_MEMORY"


class DeadlineExceeded(StageFailed):
    code = "TIMEOUT"


class InternalFailure(StageFailed):
    """The worker failed on an execution in a way it did not foresee (a bug, not the input's fault)."""

    code = "INTERNAL"


class TransientFailure(StagehubError):
    """Worth a retry: the message is left on the queue to be received again."""

    code = "TRANSIENT"


class PoisonMessage(StagehubError):
    """A queue message that can never be processed (malformed, unknown version)."""

    code = "POISON_MESSAGE"
