"""A local stand-in for API Gateway: HTTP requests become REST proxy events for the same Lambda handlers.

Routes come from `functions.routes.ROUTES`; authorized routes run the Lambda authorizer first, as API
Gateway does, and its denials get the gateway responses the CDK app configures (API.md's error body).
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from functions.routes import API_FUNCTIONS, AUTHORIZER_MODULE, ROUTES, Route
from local import webapp

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
STAGE_NAME = "local"
ACCOUNT_ID = "123456789012"
API_ID = "local"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]


def _compile(route: Route) -> _CompiledRoute:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route.path))
    return _CompiledRoute(route, re.compile(f"^{regex}$"))


class RouteTable:
    """Finds the route of a method and path."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self._routes = [_compile(r) for r in routes]

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        """(route, path parameters), or (None, {}) when no route has this method and path."""
        for compiled in self._routes:
            found = compiled.pattern.match(path)
            if found and compiled.route.method == method:
                return compiled.route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, {}


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"code": code, "message": message}),
    }


class _Dispatcher:
    """Turns one parsed request into handler calls, as API Gateway would."""

    def __init__(self) -> None:
        self._routes = RouteTable()
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def _handler(self, module: str) -> Handler:
        with self._lock:
            if module not in self._handlers:
                self._handlers[module] = importlib.import_module(module).lambda_handler
            return self._handlers[module]

    def _authorize(self, headers: dict[str, str], method: str, resource: str, request_id: str) -> dict[str, Any] | None:
        """The authorizer's context, or None when it denies (API Gateway then answers 401)."""
        token = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not token:
            return None
        event = {
            "type": "TOKEN",
            "authorizationToken": token,
            "methodArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT_ID}:{API_ID}/{STAGE_NAME}/{method}{resource}",
        }
        try:
            policy = self._handler(AUTHORIZER_MODULE)(event, LambdaContext("authorizer", request_id))
        except Exception:  # API Gateway turns any authorizer failure into 401; so do we.
            return None
        statements = policy.get("policyDocument", {}).get("Statement", [])
        if not statements or any(s.get("Effect") != "Allow" for s in statements):
            return None
        return {"principalId": policy.get("principalId"), **(policy.get("context") or {})}

    def dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1"
    ) -> dict[str, Any]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        route, path_parameters = self._routes.match(method, path)
        if route is None:
            browser = webapp.browser_answer(method, path, headers, self._routes)  # web app files, CORS preflight
            if browser is not None:
                return browser
            # API Gateway answers an unknown method or path alike (MISSING_AUTHENTICATION_TOKEN, mapped to 404).
            return _error(404, "NOT_FOUND", "no such route")
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", "the request body is larger than 10 MB")
        request_id = str(uuid.uuid4())
        authorizer: dict[str, Any] | None = None
        if route.authorized:
            authorizer = self._authorize(headers, method, route.path, request_id)
            if authorizer is None:
                return _error(401, "UNAUTHORIZED", "missing or invalid access token")
        event = _proxy_event(route, path, parts.query, path_parameters, headers, body, request_id, authorizer)
        event["requestContext"]["identity"]["sourceIp"] = source_ip  # the connection's peer, as API Gateway sees
        try:
            handler = self._handler(API_FUNCTIONS[route.function])
        except ImportError:
            return _error(503, "SERVICE_UNAVAILABLE", f"the {route.function} function is not available")
        try:
            return handler(event, LambdaContext(route.function, request_id))
        except Exception:  # API Gateway answers 502 when a Lambda function crashes.
            return _error(502, "BAD_GATEWAY", "the function failed")


def _proxy_event(
    route: Route,
    path: str,
    query: str,
    path_parameters: dict[str, str],
    headers: dict[str, str],
    body: bytes,
    request_id: str,
    authorizer: dict[str, Any] | None,
) -> dict[str, Any]:
    multi_query = parse_qs(query, keep_blank_values=True)
    try:
        text: str | None = body.decode() if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": route.method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "body": text,
        "isBase64Encoded": is_base64,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "resourcePath": route.path,
            "httpMethod": route.method,
            "path": f"/{STAGE_NAME}{path}",
            "stage": STAGE_NAME,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent")},
            "authorizer": authorizer,
        },
    }


class _RequestHandler(BaseHTTPRequestHandler):
    dispatcher: _Dispatcher
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the handlers log each request themselves."""

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(_error(400, "BAD_REQUEST", "invalid Content-Length"))
            return
        if length > MAX_BODY_BYTES:
            self._send(_error(413, "PAYLOAD_TOO_LARGE", "the request body is larger than 10 MB"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        self._send(
            webapp.with_local_cors(
                headers, self.dispatcher.dispatch(self.command, self.path, headers, body, self.client_address[0])
            )
        )

    def _send(self, response: dict[str, Any]) -> None:
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
        self.send_response(int(response.get("statusCode", 200)))
        headers = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers.setdefault(name, values[-1] if values else "")
        headers.pop("Content-Length", None)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle  # noqa: N815


class LocalGateway:
    """Serves the API on host:port in a background thread; port 0 picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        handler = type("Handler", (_RequestHandler,), {"dispatcher": _Dispatcher()})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-gateway", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
