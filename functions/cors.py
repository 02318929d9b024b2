"""CORS for the web app (API.md "The web app"): every answer of an API function, errors included, names the
allowed origin of the browser that asked, so that a page on the web app's origin can read it.

Preflight (`OPTIONS`) never reaches a function: API Gateway answers it (and the local gateway does the same).
No credentials mode: the page sends its token in the Authorization header, never in a cookie.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Prefer")
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
EXPOSED_HEADERS = ("Retry-After", "Preference-Applied")
PREFLIGHT_MAX_AGE_S = 600


def request_origin(headers: Mapping[str, str] | None) -> str | None:
    return next((value for name, value in (headers or {}).items() if name.lower() == "origin"), None)


def allowed_origin(origin: str | None, allowed: Sequence[str]) -> str | None:
    """The value of Access-Control-Allow-Origin for a request from `origin`, or None when it is not allowed."""
    if "*" in allowed:
        return "*"
    return origin if origin is not None and origin in allowed else None


def cors_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str]:
    """The headers of an answer (not a preflight) to a request from `origin`."""
    value = allowed_origin(origin, allowed)
    headers = {} if "*" in allowed else {"Vary": "Origin"}
    if value is not None:
        headers["Access-Control-Allow-Origin"] = value
        headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
    return headers


def preflight_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str]:
    """The headers of a preflight answer, as API Gateway's CORS options produce them."""
    headers = cors_headers(origin, allowed)
    if "Access-Control-Allow-Origin" in headers:
        headers["Access-Control-Allow-Methods"] = ",".join(ALLOWED_METHODS)
        headers["Access-Control-Allow-Headers"] = ",".join(ALLOWED_HEADERS)
        headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return headers


def with_cors(event: Mapping[str, Any], response: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    """`response` (a proxy integration answer) with the CORS headers for the event's Origin added."""
    extra = cors_headers(request_origin(event.get("headers")), allowed)
    if not extra:
        return response
    if response.get("multiValueHeaders") is not None:
        multi = dict(response["multiValueHeaders"])
        for name, value in extra.items():
            multi.setdefault(name, [value])
        return {**response, "multiValueHeaders": multi}
    headers = dict(response.get("headers") or {})
    for name, value in extra.items():
        headers.setdefault(name, value)
    return {**response, "headers": headers}
