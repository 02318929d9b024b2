"""The web app in the local stack: `webapp/`'s static files at `/`, and `/config.json` telling the page where
the API is (its own origin here), with the security headers CloudFront sends in AWS.

The local gateway hands it the GET and HEAD requests whose path is no API route.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from functions.cors import ALLOWED_METHODS, preflight_headers, request_origin, with_cors
from shared.settings import get_settings
from shared.webapp import CONFIG_FILE, PERMISSIONS_POLICY, REFERRER_POLICY, content_security_policy

WEBAPP_DIR = Path(__file__).resolve().parents[1] / "webapp"
INDEX = "index.html"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}


class WebApp:
    """Answers for the web app's paths, as API Gateway proxy-style response dicts."""

    def __init__(self, root: Path = WEBAPP_DIR, storage_origin: str | None = None) -> None:
        self.root = root.resolve()
        origins = [storage_origin] if storage_origin else []
        self.headers = {
            "Content-Security-Policy": content_security_policy(origins, origins),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": REFERRER_POLICY,
            "Permissions-Policy": PERMISSIONS_POLICY,
            "Cross-Origin-Opener-Policy": "same-origin",
        }

    def file_for(self, path: str) -> Path | None:
        """The file under the web app's folder that `path` names (`/` is index.html), or None."""
        relative = PurePosixPath(path.lstrip("/") or INDEX)
        if any(part in ("..", "") or part.startswith(".") for part in relative.parts):
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def serves(self, path: str) -> bool:
        return path == f"/{CONFIG_FILE}" or self.file_for(path) is not None

    def response(self, path: str) -> dict[str, Any]:
        """The answer for a path `serves` accepts; a 404 in API.md's error body otherwise."""
        if path == f"/{CONFIG_FILE}":
            # Same origin locally: the page calls the API on the URL it was loaded from.
            body = json.dumps({"apiBaseUrl": ""}).encode()
            return self._answer(body, "application/json", "no-store")
        found = self.file_for(path)
        if found is None:
            return {
                "statusCode": 404,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"code": "NOT_FOUND", "message": "no such route"}),
            }
        content_type = TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        return self._answer(found.read_bytes(), content_type, "no-cache")

    def _answer(self, body: bytes, content_type: str, cache: str) -> dict[str, Any]:
        return {
            "statusCode": 200,
            "headers": {"Content-Type": content_type, "Cache-Control": cache, **self.headers},
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }


class _Routes(Protocol):
    def match(self, method: str, path: str) -> tuple[Any, dict[str, str]]: ...


def browser_answer(method: str, path: str, headers: Mapping[str, str], routes: _Routes) -> dict[str, Any] | None:
    """For a request no API route takes: a CORS preflight of an API path (API Gateway's OPTIONS methods answer
    those in AWS) or a web app file; None when it is neither (the gateway then answers 404)."""
    settings = get_settings()
    if method == "OPTIONS" and any(routes.match(m, path)[0] for m in ALLOWED_METHODS if m != "OPTIONS"):
        return {"statusCode": 204, "headers": preflight_headers(request_origin(headers), settings.cors_allow_origins)}
    webapp = WebApp(storage_origin=settings.aws_endpoint_url)
    if method in ("GET", "HEAD") and webapp.serves(path):
        return webapp.response(path)
    return None


def with_local_cors(headers: Mapping[str, str], response: dict[str, Any]) -> dict[str, Any]:
    """The gateway's own answers (401, 404, 413) carry CORS headers too, as the gateway responses do in AWS."""
    return with_cors({"headers": dict(headers)}, response, get_settings().cors_allow_origins)
