"""Login and registration throttling and session families over HTTP on the local gateway (API.md, "Login
throttling" and "Sessions"), with API.md's default limits and clients on distinct 127.x.y.z addresses."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from functions.auth import tokens as auth_tokens
from local.gateway import LocalGateway
from shared.settings import Settings, get_settings
from tests.integration.conftest import PASSWORD

API_MD_LIMITS = {
    "LOGIN_FAILURES_PER_EMAIL": "5",
    "LOGIN_FAILURE_WINDOW_S": "900",
    "LOGIN_FAILURES_PER_ADDRESS": "30",
    "REGISTRATIONS_PER_ADDRESS": "10",
}

Client = Callable[[], httpx.Client]


@pytest.fixture
def limits(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """API.md's figures (the session's stack raises the per-address ones: every other test is 127.0.0.1)."""
    for name, value in API_MD_LIMITS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def client_at(gateway: LocalGateway, limits: Settings) -> Iterator[Client]:
    """`client_at()`: an HTTP client connecting from a fresh loopback address (the gateway sees it as sourceIp)."""
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        client = httpx.Client(base_url=gateway.url, timeout=60, transport=httpx.HTTPTransport(local_address=address))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _email() -> str:
    return f"throttle-{uuid.uuid4().hex[:12]}@example.com"


def _login(api: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return api.post("/auth/login", json={"email": email, "password": password})


def _register(api: httpx.Client, email: str) -> httpx.Response:
    return api.post("/auth/register", json={"email": email, "password": PASSWORD})


def _assert_throttled(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "THROTTLED"
    assert 1 <= int(response.headers["Retry-After"]) <= 900
    return {"code": response.json()["code"], "message": response.json()["message"]}


def test_five_failed_logins_throttle_an_existing_and_an_unknown_email_alike(client_at: Client) -> None:
    api = client_at()
    existing, unknown = _email(), _email()
    assert _register(api, existing).status_code == 201
    answers = {}
    for email in (existing, unknown):
        api = client_at()
        for _ in range(5):
            assert _login(api, email, "wrong password!").status_code == 401
        answers[email] = _assert_throttled(_login(api, email))  # the right password, for `existing`
        _assert_throttled(_login(client_at(), email))  # from any address: the limit is the email's
    assert answers[existing] == answers[unknown]


def test_a_successful_login_clears_the_failures(client_at: Client) -> None:
    api = client_at()
    email = _email()
    assert _register(api, email).status_code == 201
    for _ in range(4):
        assert _login(api, email, "wrong password!").status_code == 401
    assert _login(api, email).status_code == 200
    for _ in range(4):
        assert _login(api, email, "wrong password!").status_code == 401
    assert _login(api, email).status_code == 200


def test_failed_logins_are_limited_per_client_address(client_at: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # A lower limit than API.md's 30 keeps the test short (each failure hashes a password); the unit tests check 30.
    monkeypatch.setenv("LOGIN_FAILURES_PER_ADDRESS", "8")
    get_settings.cache_clear()
    api, neighbour = client_at(), client_at()
    for _ in range(8):
        assert _login(api, _email(), "wrong password!").status_code == 401
    _assert_throttled(_login(api, _email(), "wrong password!"))
    assert _login(neighbour, _email(), "wrong password!").status_code == 401


def test_registrations_are_limited_per_client_address(client_at: Client) -> None:
    api, neighbour = client_at(), client_at()
    for _ in range(10):
        assert _register(api, _email()).status_code == 201
    _assert_throttled(_register(api, _email()))
    assert _register(neighbour, _email()).status_code == 201


def test_token_answers_are_not_stored(client_at: Client) -> None:
    api = client_at()
    email = _email()
    assert _register(api, email).status_code == 201
    login = _login(api, email)
    refreshed = api.post("/auth/refresh", json={"refreshToken": login.json()["refreshToken"]})
    for response in (login, refreshed):
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"] == "no-store"


def test_logout_racing_refreshes_leaves_no_working_token(client_at: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 sessions, each logged out while a refresh of its token is in flight: no token of any of them works.

    Each refresh is held for a moment between using its token and storing the next one (where a revocation that
    walks the family's tokens misses the new one), and the logouts land in that moment."""
    api = client_at()
    email = _email()
    assert _register(api, email).status_code == 201
    addresses = [client_at() for _ in range(4)]  # 5 logins from each
    tokens = [_login(addresses[n % 4], email).json()["refreshToken"] for n in range(20)]
    new_refresh_token = auth_tokens.new_refresh_token

    def slow_new_refresh_token() -> str:
        time.sleep(0.5)
        return new_refresh_token()

    monkeypatch.setattr(auth_tokens, "new_refresh_token", slow_new_refresh_token)

    def refresh(token: str) -> httpx.Response:
        return api.post("/auth/refresh", json={"refreshToken": token})

    def logout(token: str) -> httpx.Response:
        return api.post("/auth/logout", json={"refreshToken": token})

    with ThreadPoolExecutor(max_workers=40) as pool:
        refreshes = [pool.submit(refresh, token) for token in tokens]
        time.sleep(0.25)
        logouts = [pool.submit(logout, token) for token in tokens]
        assert all(future.result().status_code == 204 for future in logouts)
        answers = [future.result() for future in refreshes]
    monkeypatch.setattr(auth_tokens, "new_refresh_token", new_refresh_token)
    assert {answer.status_code for answer in answers} <= {200, 401}
    issued = [answer.json()["refreshToken"] for answer in answers if answer.status_code == 200]
    working = [token for token in tokens + issued if refresh(token).status_code != 401]
    assert working == []
