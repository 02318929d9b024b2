"""Hostile request bodies, refused before routing (API.md, "Limits, fairness and hostile input").

A body must be declared `application/json` (parameters such as `charset` allowed) or it is a 415; JSON nested
deeper than `MAX_DEPTH` is a 400 before pydantic or any other recursive code sees it; a NUL or a lone surrogate
in any string (keys included) is a 422, so nothing downstream (UTF-8 encoding, DynamoDB, S3, the worker) meets one.
Everything else (malformed JSON, a non-object) is left to the resolver's validation and its 400/422.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from shared.errors import BadRequest, StagehubError, UnsupportedMediaType, ValidationFailed

MAX_DEPTH = 32
JSON_MEDIA_TYPE = "application/json"

_FORBIDDEN_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class _TooDeep(Exception):
    pass


def _header(event: Mapping[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _body_text(event: Mapping[str, Any]) -> str | None:
    body = event.get("body")
    if not body:
        return None
    if not event.get("isBase64Encoded"):
        return str(body)
    try:
        return base64.b64decode(body, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not UTF-8 JSON") from exc


def is_json_media_type(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def _forbidden_string(value: Any) -> list[str] | None:
    """The location of the first string (key or value) holding a NUL or a lone surrogate, if any.

    Walks without recursion, and raises `_TooDeep` for arrays and objects nested deeper than `MAX_DEPTH`.
    """
    pending: list[tuple[list[str], Any, int]] = [([], value, 0)]
    while pending:
        loc, item, depth = pending.pop()
        if isinstance(item, str) and _FORBIDDEN_CHARACTER.search(item):
            return loc
        if isinstance(item, dict | list) and depth + 1 > MAX_DEPTH:
            raise _TooDeep
        if isinstance(item, dict):
            for key, child in item.items():
                if _FORBIDDEN_CHARACTER.search(key):
                    return [*loc, key.encode("unicode_escape").decode()]
                pending.append(([*loc, key], child, depth + 1))
        elif isinstance(item, list):
            pending.extend(([*loc, str(i)], child, depth + 1) for i, child in enumerate(item))
    return None


def body_problem(event: Mapping[str, Any]) -> StagehubError | None:
    """Why this API Gateway event's body must be refused, or None to let the route validate it."""
    try:
        text = _body_text(event)
    except BadRequest as exc:
        return exc
    if text is None:
        return None
    if not is_json_media_type(_header(event, "content-type")):
        return UnsupportedMediaType(f"a request body must be {JSON_MEDIA_TYPE}")
    too_deep = BadRequest(f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
    try:
        loc = _forbidden_string(json.loads(text))  # json's C parser: linear, and RecursionError when very deep
    except RecursionError:
        return too_deep
    except _TooDeep:
        return too_deep
    except ValueError:
        return None  # malformed JSON: the resolver answers its own 400 with details
    if loc is None:
        return None
    detail = {"loc": ["body", *loc], "message": "NUL characters and lone surrogates are not allowed", "type": "string"}
    return ValidationFailed("the body holds a NUL character or a lone surrogate", details=[detail])
