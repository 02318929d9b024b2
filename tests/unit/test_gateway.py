"""The local gateway's HTTP behaviour, with small handlers (`gateway_functions`) instead of the API's functions.

Each function runs in instances that serve one request at a time (as Lambda's do); the gateway answers malformed
HTTP with API.md's error body, keeps connections alive without stalls, times out silent clients and passes the
client's address as `requestContext.identity.sourceIp`.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from functions.routes import Route
from local.gateway import LocalGateway

FUNCTIONS = "tests.unit.gateway_functions"
ROUTES = (
    Route("POST", "/echo", "echo", authorized=False),
    Route("GET", "/items/{itemId}", "echo"),
    Route("POST", "/crash", "crash", authorized=False),
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalGateway]:
    server = LocalGateway(
        port=0,
        routes=ROUTES,
        functions={"echo": f"{FUNCTIONS}:echo", "crash": f"{FUNCTIONS}:crash"},
        authorizer=f"{FUNCTIONS}:authorize",
        instances_per_function=3,
        read_timeout_s=1.0,
        invocation_timeout_s=5.0,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(gateway: LocalGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


def _raw(gateway: LocalGateway, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes on a fresh connection; (status, JSON body) of the answer."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower()
    return status, json.loads(body)


def test_each_instance_serves_one_request_at_a_time_and_every_answer_is_its_own(gateway: LocalGateway) -> None:
    def call(n: int) -> dict[str, Any]:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            marker = f"{n}-{uuid.uuid4()}"
            answer = client.post("/echo", json={"marker": marker, "sleepS": 0.2})
            assert answer.status_code == 200, answer.text
            assert answer.json()["marker"] == marker
            return answer.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(call, range(16)))
    assert {a["inFlight"] for a in answers} == {1}
    assert 1 < len({a["pid"] for a in answers}) <= 3  # scaled out, up to the limit


def test_keep_alive_connections_serve_many_requests(api: httpx.Client) -> None:
    for n in range(20):
        answer = api.post("/echo", json={"marker": n})
        assert answer.status_code == 200
        assert answer.json()["marker"] == n
        assert answer.headers.get("connection", "").lower() != "close"


def test_the_client_address_is_the_events_source_ip(gateway: LocalGateway) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.7")
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=60) as client:
        assert client.post("/echo", json={}).json()["sourceIp"] == "127.0.0.7"


def test_repeated_headers_reach_the_event_as_multi_value_headers(api: httpx.Client) -> None:
    answer = api.post("/echo", json={}, headers=[("X-Thing", "a"), ("X-Thing", "b")])
    assert answer.json()["multiValueHeaders"]["X-Thing"] == ["a", "b"]


def test_authorized_routes_run_the_authorizer(api: httpx.Client) -> None:
    assert api.get("/items/1", headers={"Authorization": "Bearer user-42"}).json()["userId"] == "42"
    denied = api.get("/items/1", headers={"Authorization": "Bearer nobody"})
    assert (denied.status_code, denied.json()["code"]) == (401, "UNAUTHORIZED")
    assert api.get("/items/1").status_code == 401


def test_a_failing_function_is_a_502_and_a_crashed_instance_is_replaced(api: httpx.Client) -> None:
    raised = api.post("/crash", json={})
    assert (raised.status_code, raised.json()["code"]) == (502, "BAD_GATEWAY")
    crashed = api.post("/crash", json={"exit": True})
    assert (crashed.status_code, crashed.json()["code"]) == (502, "BAD_GATEWAY")
    assert api.post("/echo", json={"marker": "after"}).json()["marker"] == "after"


def test_an_invocation_past_the_timeout_is_a_504_and_its_instance_is_replaced(api: httpx.Client) -> None:
    stuck = api.post("/echo", json={"sleepS": 30})
    assert (stuck.status_code, stuck.json()["code"]) == (504, "GATEWAY_TIMEOUT")
    assert api.post("/echo", json={"marker": "next"}).json()["marker"] == "next"


def test_instances_see_the_gateways_environment_as_it_is_now(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_VALUE", "first")
    assert api.post("/echo", json={}).json()["environment"] == "first"
    monkeypatch.setenv("GATEWAY_TEST_VALUE", "second")
    assert api.post("/echo", json={}).json()["environment"] == "second"


def test_unknown_routes_are_404_with_the_error_body(api: httpx.Client) -> None:
    for method, path in (("GET", "/nowhere"), ("GET", "/echo"), ("DELETE", "/items/1")):
        answer = api.request(method, path)
        assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n", 501, "NOT_IMPLEMENTED"),
        (b"garbage\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /echo HTTP/7.0\r\nHost: x\r\n\r\n", 505, "HTTP_VERSION_NOT_SUPPORTED"),
        (b"GET /echo HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431, "REQUEST_HEADER_FIELDS_TOO_LARGE"),
        (
            b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(150)) + b"\r\n",
            431,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
        ),
        (b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "BAD_REQUEST"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n", 413, "PAYLOAD_TOO_LARGE"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "LENGTH_REQUIRED"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "URI_TOO_LONG"),
    ],
)
def test_malformed_http_gets_the_error_body(
    gateway: LocalGateway, request_bytes: bytes, status: int, code: str
) -> None:
    answered, body = _raw(gateway, request_bytes)
    assert answered == status
    assert body["code"] == code
    assert body["message"]


def test_a_body_that_stops_arriving_times_out_with_408(gateway: LocalGateway) -> None:
    status, body = _raw(gateway, b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    assert (status, body["code"]) == (408, "REQUEST_TIMEOUT")


def test_an_idle_connection_is_closed_after_the_read_timeout(gateway: LocalGateway) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        assert conn.recv(1) == b""  # closed by the gateway, nothing sent
