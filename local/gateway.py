"""A local stand-in for API Gateway: HTTP requests become REST proxy events for the same Lambda handlers.

Routes come from `functions.routes.ROUTES`; authorized routes run the Lambda authorizer first, as API
Gateway does, and its denials get the gateway responses the CDK app configures (API.md's error body).
Each function runs in its own instances (`local.instances`: processes serving one request at a time, as
Lambda's do), so concurrent requests share no state. Every answer the gateway makes itself, malformed HTTP
included, carries API.md's error body; the client's address is `requestContext.identity.sourceIp`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from functions.routes import API_FUNCTIONS, AUTHORIZER_MODULE, ROUTES, Route
from local import webapp
from local.instances import ACCOUNT_ID, INVOCATION_TIMEOUT_S, FunctionInstances, InvocationFailed, LambdaContext

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
STAGE_NAME = "local"
API_ID = "local"
READ_TIMEOUT_S = 30.0  # a client that sends nothing for this long (headers, body, next request) is disconnected
INSTANCES_PER_FUNCTION = 4
# The methods API Gateway knows; any other answers 501 (a known one without a route answers 404).
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
# API.md's codes for the statuses the gateway answers itself (the HTTP layer's included).
_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
    505: "HTTP_VERSION_NOT_SUPPORTED",
}

__all__ = ["LambdaContext", "LocalGateway", "RouteTable"]


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


def _error_for(status: int, message: str) -> dict[str, Any]:
    return _error(status, _CODES.get(status, HTTPStatus(status).name), message)


class _Dispatcher:
    """Turns one parsed request into function invocations, as API Gateway would."""

    def __init__(
        self,
        routes: tuple[Route, ...] = ROUTES,
        functions: dict[str, str] | None = None,
        authorizer: str = AUTHORIZER_MODULE,
        instances_per_function: int = INSTANCES_PER_FUNCTION,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
    ) -> None:
        self._routes = RouteTable(routes)
        self._functions = API_FUNCTIONS if functions is None else functions
        self._authorizer = authorizer
        self._instances_per_function = instances_per_function
        self._invocation_timeout_s = invocation_timeout_s
        self._instances: dict[str, FunctionInstances] = {}
        self._lock = threading.Lock()

    def _function(self, module: str) -> FunctionInstances:
        with self._lock:
            if module not in self._instances:
                self._instances[module] = FunctionInstances(
                    module, self._instances_per_function, self._invocation_timeout_s
                )
            return self._instances[module]

    def close(self) -> None:
        with self._lock:
            instances, self._instances = list(self._instances.values()), {}
        for function in instances:
            function.close()

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
            policy = self._function(self._authorizer).invoke(event, LambdaContext("authorizer", request_id))
        except InvocationFailed:  # API Gateway turns any authorizer failure into 401; so do we.
            return None
        statements = policy.get("policyDocument", {}).get("Statement", [])
        if not statements or any(s.get("Effect") != "Allow" for s in statements):
            return None
        return {"principalId": policy.get("principalId"), **(policy.get("context") or {})}

    def dispatch(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, list[str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """The response to one request; `headers` maps each name to its values, in the order received."""
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        route, path_parameters = self._routes.match(method, path)
        single_headers = {name: values[-1] for name, values in headers.items()}
        if route is None:
            browser = webapp.browser_answer(method, path, single_headers, self._routes)  # web app files, CORS preflight
            if browser is not None:
                return browser
            # API Gateway answers an unknown method or path alike (MISSING_AUTHENTICATION_TOKEN, mapped to 404).
            return _error(404, "NOT_FOUND", "no such route")
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", "the request body is larger than 10 MB")
        request_id = str(uuid.uuid4())
        authorizer: dict[str, Any] | None = None
        if route.authorized:
            authorizer = self._authorize(single_headers, method, route.path, request_id)
            if authorizer is None:
                return _error(401, "UNAUTHORIZED", "missing or invalid access token")
        request = _Request(route, path, parts.query, path_parameters, headers, body, source_ip)
        event = _proxy_event(request, request_id, authorizer)
        try:
            return self._function(self._functions[route.function]).invoke(
                event, LambdaContext(route.function, request_id)
            )
        except InvocationFailed as exc:  # API Gateway answers 502 when a function fails, 504 when it times out
            if exc.timed_out:
                return _error(504, "GATEWAY_TIMEOUT", "the function did not answer in time")
            return _error(502, "BAD_GATEWAY", "the function failed")


@dataclass(frozen=True)
class _Request:
    route: Route
    path: str
    query: str
    path_parameters: dict[str, str]
    headers: dict[str, list[str]]
    body: bytes
    source_ip: str


def _proxy_event(request: _Request, request_id: str, authorizer: dict[str, Any] | None) -> dict[str, Any]:
    route, path, body = request.route, request.path, request.body
    headers = {name: values[-1] for name, values in request.headers.items()}
    multi_query = parse_qs(request.query, keep_blank_values=True)
    try:
        text: str | None = body.decode() if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": route.method,
        "headers": headers or None,
        "multiValueHeaders": dict(request.headers) or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": request.path_parameters or None,
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
            "identity": {"sourceIp": request.source_ip, "userAgent": user_agent},
            "authorizer": authorizer,
        },
    }


class _RequestHandler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, no Nagle delay, a read timeout, JSON errors for malformed HTTP."""

    dispatcher: _Dispatcher
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a keep-alive answer waits ~40 ms for the client's delayed ACK
    timeout = READ_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the handlers log each request themselves."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP layer's own errors (bad request line, headers too large, unknown method) in API.md's body."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unreadable request line: answer in HTTP/1.1 all the same
            self.request_version = self.protocol_version
        self._send(_error_for(code, message or HTTPStatus(code).phrase))

    def __getattr__(self, name: str) -> Any:
        """`do_<METHOD>` for API Gateway's methods; any other method stays unknown (501)."""
        if name.startswith("do_") and name[3:] in METHODS:
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.send_error(411, "chunked bodies are not supported: send Content-Length")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "invalid Content-Length")
            return
        if length > MAX_BODY_BYTES:
            self.send_error(413, "the request body is larger than 10 MB")
            return
        try:
            body = self.rfile.read(length) if length else b""
        except TimeoutError:
            self.send_error(408, f"the body did not arrive within {self.timeout} s")
            return
        if len(body) < length:  # the client closed the connection mid-body
            self.close_connection = True
            return
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name, []).append(value)
        source_ip = str(self.client_address[0])
        answer = self.dispatcher.dispatch(self.command, self.path, headers, body, source_ip)
        self._send(webapp.with_local_cors({name: values[-1] for name, values in headers.items()}, answer))

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
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connecting at once must not find the backlog full


class LocalGateway:
    """Serves the API on host:port in a background thread; port 0 picks a free port.

    `functions` (function name -> handler module) and `authorizer` default to `functions.routes`'; each function
    gets up to `instances_per_function` instances (processes), started on demand. A connection that sends nothing
    for `read_timeout_s` is closed (mid-body: after a 408); an invocation that takes longer than
    `invocation_timeout_s` (API Gateway's 29 s) is answered 504 and its instance replaced.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        routes: tuple[Route, ...] = ROUTES,
        functions: dict[str, str] | None = None,
        authorizer: str = AUTHORIZER_MODULE,
        instances_per_function: int = INSTANCES_PER_FUNCTION,
        read_timeout_s: float = READ_TIMEOUT_S,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
    ) -> None:
        self._dispatcher = _Dispatcher(routes, functions, authorizer, instances_per_function, invocation_timeout_s)
        handler = type("Handler", (_RequestHandler,), {"dispatcher": self._dispatcher, "timeout": read_timeout_s})
        self._server = _Server((host, port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-gateway", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dispatcher.close()
