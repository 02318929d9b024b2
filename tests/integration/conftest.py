"""HTTP fixtures: the local gateway serving the same handlers on the session's moto stack."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from local.gateway import LocalGateway
from shared.settings import Settings

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def gateway(stack_environment: dict[str, str]) -> Iterator[LocalGateway]:
    server = LocalGateway(port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(gateway: LocalGateway, stack_env: Settings) -> Iterator[httpx.Client]:
    """An HTTP client of the local gateway, with this process pointed at the moto stack."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class TestUser:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register_and_login(api: httpx.Client, display_name: str | None = None) -> TestUser:
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": PASSWORD} | ({"displayName": display_name} if display_name else {})
    registered = api.post("/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    tokens = api.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return TestUser(registered.json()["userId"], email, tokens.json()["accessToken"], tokens.json()["refreshToken"])


@pytest.fixture
def new_user(api: httpx.Client) -> Callable[..., TestUser]:
    """Registers and logs in a fresh user: `alice = new_user()`."""
    return lambda display_name=None: register_and_login(api, display_name)
