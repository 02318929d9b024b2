"""64 clients at once on the local gateway and the real functions: no errors, and every answer is its own.

Each client has its own address (127.0.0.x, as distinct clients reach API Gateway), registers and logs in its
own user, then (all together) for the test's duration reads its own profile, creates pipelines and reads them
back, with a registration of a fresh email now and then, and checks that each answer belongs to its request
(the user id, the email, the pipeline's name). `STAGEHUB_GATEWAY_LOAD_S` sets the duration (default 30 s).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from local.gateway import LocalGateway
from shared.settings import Settings
from tests.integration.conftest import PASSWORD

CLIENTS = 64
DURATION_S = min(30.0, float(os.environ.get("STAGEHUB_GATEWAY_LOAD_S", "30")))
PIPELINE = {"description": "load", "stages": [{"type": "txt2txt", "inline": True, "body": "hello", "parameters": {}}]}

pytestmark = pytest.mark.slow


class _Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.problems: Counter[str] = Counter()

    def count(self, problem: str | None = None) -> None:
        with self._lock:
            self.requests += 1
            if problem:
                self.problems[problem] += 1


def _check(tally: _Tally, response: httpx.Response, status: int, expected: dict[str, str]) -> dict[str, str]:
    """Count the answer; a wrong status or a field that is not this request's is a problem."""
    if response.status_code != status:
        tally.count(f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}")
        return {}
    body = response.json()
    wrong = {name: body.get(name) for name, value in expected.items() if body.get(name) != value}
    tally.count(f"another request's answer: {wrong}" if wrong else None)
    return body  # type: ignore[no-any-return]


def _client_session(url: str, n: int, start: threading.Barrier, tally: _Tally) -> None:
    """One client: sign up, wait for the others, then run rounds until the duration has passed."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{n + 2}")
    with httpx.Client(base_url=url, transport=transport, timeout=60) as api:
        email = f"load-{n}-{uuid.uuid4().hex[:8]}@example.com"
        user = _check(tally, api.post("/auth/register", json={"email": email, "password": PASSWORD}), 201, {})
        login = api.post("/auth/login", json={"email": email, "password": PASSWORD}) if user else None
        tokens = _check(tally, login, 200, {}) if login else {}
        start.wait()
        if not tokens:
            return
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        me = {"userId": user["userId"], "email": email}
        deadline = time.monotonic() + DURATION_S
        round_ = 0
        while time.monotonic() < deadline:
            round_ += 1
            _check(tally, api.get("/users/me", headers=auth), 200, me)
            name = f"load {n} {round_}"
            created = _check(tally, api.post("/pipelines", headers=auth, json={"name": name, **PIPELINE}), 201, {})
            if created:
                expected = {"pipelineId": created["pipelineId"], "name": name, "author": user["userId"]}
                _check(tally, api.get(f"/pipelines/{created['pipelineId']}", headers=auth), 200, expected)
            _check(tally, api.get("/health"), 200, {"status": "ok"})
            if round_ == 2:  # one more registration each, in the thick of it (per-address limits allow 10 a minute)
                fresh = f"load-{n}-{uuid.uuid4().hex[:8]}@example.com"
                body = {"email": fresh, "password": PASSWORD}
                _check(tally, api.post("/auth/register", json=body), 201, {"email": fresh})


def test_64_concurrent_clients_get_no_errors_and_only_their_own_answers(
    gateway: LocalGateway, stack_env: Settings
) -> None:
    tally = _Tally()
    start = threading.Barrier(CLIENTS, timeout=300)
    with ThreadPoolExecutor(CLIENTS) as clients:
        for done in [clients.submit(_client_session, gateway.url, n, start, tally) for n in range(CLIENTS)]:
            done.result()
    assert dict(tally.problems) == {}, f"{sum(tally.problems.values())} problems in {tally.requests} requests"
    assert tally.requests >= CLIENTS * 6  # signed up, and at least one round each
