"""The auth domain with in-memory stores: registration and login throttling, sessions (families), rotation."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from functions.auth import logic, passwords
from functions.auth.schemas import Login, Register, TokenPair
from functions.auth.store import Session
from functions.http import make_resolver, source_ip
from shared.errors import Conflict, Throttled, Unauthorized
from tests.unit.auth_fakes import FakeAuth, fake_auth

PASSWORD = "correct horse battery"
WRONG = "not the password"
ADDRESS = "203.0.113.7"


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id costs ~50 ms a hash by design; the domain's logic does not depend on it (HTTP tests use it)."""
    monkeypatch.setattr(passwords, "hash_password", lambda password: "h:" + password)
    monkeypatch.setattr(passwords, "verify_password", lambda stored, password: stored == "h:" + password)
    monkeypatch.setattr(passwords, "burn_verification_time", lambda password: None)


@pytest.fixture
def auth() -> FakeAuth:
    return fake_auth()


def _register(auth: FakeAuth, email: str = "ada@example.com", address: str = ADDRESS) -> str:
    return logic.register(Register(email=email, password=PASSWORD), address, auth.deps).user_id


def _login(
    auth: FakeAuth, email: str = "ada@example.com", password: str = PASSWORD, address: str = ADDRESS
) -> TokenPair:
    return logic.login(Login(email=email, password=password), address, auth.deps)


def _fail(auth: FakeAuth, email: str, times: int, address: str = ADDRESS) -> None:
    for _ in range(times):
        with pytest.raises(Unauthorized):
            _login(auth, email, WRONG, address)


# --- users ---


def test_register_then_me_and_a_duplicate_email_conflicts(auth: FakeAuth) -> None:
    user_id = _register(auth)
    assert logic.me(user_id, auth.deps).email == "ada@example.com"
    assert logic.me(user_id, auth.deps).display_name == "ada"
    with pytest.raises(Conflict):
        _register(auth, "ADA@example.com")
    with pytest.raises(Unauthorized):
        logic.me("no-such-user", auth.deps)


def test_registrations_are_limited_per_address_for_a_minute(auth: FakeAuth) -> None:
    for n in range(10):
        _register(auth, f"u{n}@example.com")
    with pytest.raises(Throttled) as throttled:
        _register(auth, "u10@example.com")
    assert throttled.value.headers == {"Retry-After": "60"}
    _register(auth, "other@example.com", address="198.51.100.1")  # another address is not affected
    auth.clock.advance(60)
    _register(auth, "u10@example.com")


def test_the_registration_limit_is_a_setting() -> None:
    auth = fake_auth(registrations_per_address=2)
    _register(auth, "a@example.com")
    _register(auth, "b@example.com")
    with pytest.raises(Throttled):
        _register(auth, "c@example.com")


# --- login throttling ---


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "unknown"])
def test_five_failures_throttle_the_email_even_with_the_right_password(auth: FakeAuth, exists: bool) -> None:
    if exists:
        _register(auth)
    _fail(auth, "ada@example.com", 5)
    auth.clock.advance(100)
    with pytest.raises(Throttled) as throttled:
        _login(auth)
    assert throttled.value.retry_after_s == 900 - 100
    assert throttled.value.message == "too many failed logins for this email"
    auth.clock.advance(800)  # the window (15 minutes from the first failure) has passed
    if exists:
        assert _login(auth).access_token
    else:
        _fail(auth, "ada@example.com", 1)


def test_the_email_limit_ignores_case_and_spacing(auth: FakeAuth) -> None:
    _register(auth)
    _fail(auth, " ADA@example.com", 5)
    with pytest.raises(Throttled):
        _login(auth, "ada@EXAMPLE.com")


def test_a_successful_login_clears_the_count(auth: FakeAuth) -> None:
    _register(auth)
    _fail(auth, "ada@example.com", 4)
    _login(auth)
    _fail(auth, "ada@example.com", 5)
    with pytest.raises(Throttled):
        _login(auth)


def test_failed_logins_are_limited_per_address(auth: FakeAuth) -> None:
    _register(auth)
    for _ in range(10):  # successful logins from the address do not count
        _login(auth)
    for n in range(30):
        _fail(auth, f"guess{n}@example.com", 1)
    with pytest.raises(Throttled) as throttled:
        _login(auth)
    assert throttled.value.message == "too many failed logins from here"
    assert _login(auth, address="198.51.100.1").access_token
    auth.clock.advance(60)
    assert _login(auth).access_token


# --- sessions ---


def test_refresh_rotates_and_reuse_revokes_the_family(auth: FakeAuth) -> None:
    _register(auth)
    first = _login(auth)
    second = logic.refresh(first.refresh_token, auth.deps)
    assert second.refresh_token != first.refresh_token
    with pytest.raises(Unauthorized):
        logic.refresh(first.refresh_token, auth.deps)  # reuse
    with pytest.raises(Unauthorized):
        logic.refresh(second.refresh_token, auth.deps)  # the family is revoked


def test_logout_is_one_write_whatever_the_family_size(auth: FakeAuth) -> None:
    _register(auth)
    pair = _login(auth)
    issued = [pair.refresh_token]
    for _ in range(50):
        pair = logic.refresh(pair.refresh_token, auth.deps)
        issued.append(pair.refresh_token)
    before = len(auth.sessions.writes)
    logic.logout(issued[0], auth.deps)  # any token of the family, even a used one
    assert auth.sessions.writes[before:] == [("revoke", next(iter(auth.sessions.sessions)))]
    for token in (issued[0], issued[-1]):
        with pytest.raises(Unauthorized):
            logic.refresh(token, auth.deps)


def test_a_token_issued_by_a_refresh_that_raced_the_logout_does_not_work(auth: FakeAuth) -> None:
    """The refresh read the family before the logout's write landed; its new token is checked when used."""
    _register(auth)
    pair = _login(auth)
    sessions = auth.sessions
    original_get = sessions.get

    def get_then_logout(family_id: str) -> Session | None:
        seen = original_get(family_id)
        logic.logout(pair.refresh_token, auth.deps)  # lands between the refresh's read and its writes
        return seen

    sessions.get = get_then_logout  # type: ignore[method-assign]
    raced = logic.refresh(pair.refresh_token, auth.deps)
    sessions.get = original_get  # type: ignore[method-assign]
    with pytest.raises(Unauthorized):
        logic.refresh(raced.refresh_token, auth.deps)


def test_logout_of_an_unknown_token_is_fine(auth: FakeAuth) -> None:
    logic.logout("never-issued", auth.deps)
    assert auth.sessions.writes == []


def test_a_family_ends_thirty_days_after_its_login_whatever_the_rotations(auth: FakeAuth) -> None:
    _register(auth)
    pair = _login(auth)
    day = 86400
    for _ in range(2):
        auth.clock.advance(14 * day)
        pair = logic.refresh(pair.refresh_token, auth.deps)
    token = auth.sessions.token(next(reversed(auth.sessions.tokens)))
    session = next(iter(auth.sessions.sessions.values()))
    assert token is not None
    assert token.expires_at == session.ends_at  # capped by the family's end
    auth.clock.advance(2 * day)  # day 30
    with pytest.raises(Unauthorized):
        logic.refresh(pair.refresh_token, auth.deps)


def test_an_expired_token_does_not_refresh(auth: FakeAuth) -> None:
    _register(auth)
    auth = fake_auth(refresh_token_ttl_s=3600)
    _register(auth)
    pair = _login(auth)
    auth.clock.advance(3600)
    with pytest.raises(Unauthorized):
        logic.refresh(pair.refresh_token, auth.deps)


@pytest.mark.parametrize(
    ("context", "expected"),
    [({"identity": {"sourceIp": "203.0.113.9"}}, "203.0.113.9"), ({}, "unknown"), (None, "unknown")],
)
def test_the_client_address_is_api_gateways_source_ip(context: dict[str, Any] | None, expected: str) -> None:
    resolver = make_resolver()
    resolver.current_event = APIGatewayProxyEvent({"requestContext": context})
    assert source_ip(resolver) == expected
