"""Auth's DynamoDB stores on the moto server: throttle windows (atomic under concurrency, reopened after they
end), session families and tokens, users, and DynamoDB failures answered as 503 with API.md's body."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.client import BaseClient

from functions.auth import logic
from functions.auth.logic import AuthDeps
from functions.auth.schemas import Login, Register
from functions.auth.store import (
    DynamoSessionStore,
    DynamoThrottleStore,
    DynamoUserStore,
    Session,
    StoredToken,
    StoredUser,
)
from functions.dynamodb import StoreUnavailable
from local.gateway import LocalGateway
from shared.errors import Unauthorized
from shared.models import ThrottleRecord, bind_models
from shared.settings import Settings, get_settings

WINDOW = timedelta(seconds=60)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)  # TTL attributes keep whole seconds


def _key() -> str:
    return f"test#{uuid.uuid4().hex}"


def test_a_throttle_window_counts_to_its_limit_then_reports_its_end(stack_env: Settings) -> None:
    store, key, now = DynamoThrottleStore(), _key(), _now()
    assert [store.take(key, 3, WINDOW, now) for _ in range(3)] == [None, None, None]
    assert store.take(key, 3, WINDOW, now + timedelta(seconds=10)) == now + WINDOW
    store.give_back(key, now)
    assert store.take(key, 3, WINDOW, now) is None
    assert store.take(key, 3, WINDOW, now) == now + WINDOW


def test_an_ended_window_is_reopened_even_before_ttl_removes_it(stack_env: Settings) -> None:
    store, key, now = DynamoThrottleStore(), _key(), _now()
    for _ in range(3):
        store.take(key, 3, WINDOW, now)
    later = now + WINDOW
    assert store.take(key, 3, WINDOW, later) is None
    record = ThrottleRecord.get(key, consistent_read=True)
    assert (record.attempts, record.expires_at) == (1, later + WINDOW)
    store.give_back(key, later + WINDOW)  # an ended window is not given back to
    assert ThrottleRecord.get(key, consistent_read=True).attempts == 1
    store.clear(key)
    with pytest.raises(ThrottleRecord.DoesNotExist):
        ThrottleRecord.get(key, consistent_read=True)


def test_concurrent_attempts_never_overrun_the_limit(stack_env: Settings) -> None:
    store, key, now = DynamoThrottleStore(), _key(), _now()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.take(key, 5, WINDOW, now), range(20)))
    assert results.count(None) == 5


def test_sessions_revoke_with_one_write_and_tokens_are_used_once(stack_env: Settings) -> None:
    store, now = DynamoSessionStore(), _now()
    family = Session(str(uuid.uuid4()), "u1", "2026-12-01T00:00:00.000Z", now + timedelta(days=30))
    store.start(family)
    token = StoredToken(uuid.uuid4().hex, family.family_id, "u1", "2026-12-01T00:00:00.000Z", now + WINDOW)
    store.add_token(token)
    assert store.token(token.token_hash) == token
    assert store.use_token(token.token_hash) is True
    assert store.use_token(token.token_hash) is False
    assert store.get(family.family_id) == family
    store.revoke(family.family_id)
    revoked = store.get(family.family_id)
    assert revoked is not None
    assert revoked.revoked is True
    missing = str(uuid.uuid4())
    store.revoke(missing)  # logout of a family that is gone: nothing is created
    assert store.get(missing) is None
    assert store.token("never-issued") is None
    assert store.use_token("never-issued") is False


def test_users_are_unique_by_email_and_found_by_id(stack_env: Settings) -> None:
    store = DynamoUserStore()
    user = StoredUser(str(uuid.uuid4()), f"{uuid.uuid4().hex}@example.com", "ada", "hash", "2026-12-01T00:00:00Z")
    assert store.create(user) is True
    assert store.create(user) is False
    assert store.by_email(user.email) == user
    assert store.by_id(user.user_id) == user
    assert store.by_email("") is None
    assert store.by_id(str(uuid.uuid4())) is None


def test_a_dynamodb_failure_is_store_unavailable(stack_env: Settings) -> None:
    bind_models(stack_env.model_copy(update={"users_table": "stagehub-no-such-table"}))
    try:
        with pytest.raises(StoreUnavailable) as failure:
            DynamoUserStore().by_email("ada@example.com")
        assert failure.value.status == 503
    finally:
        bind_models(stack_env)


def test_a_dynamodb_failure_answers_503_with_the_error_body(
    gateway: LocalGateway, stack_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THROTTLES_TABLE", "stagehub-no-such-table")
    get_settings.cache_clear()
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as api:
            response = api.post("/auth/login", json={"email": "ada@example.com", "password": "whatever it is"})
        assert response.status_code == 503, response.text
        assert response.json() == {"code": "SERVICE_UNAVAILABLE", "message": "database error on throttles"}
    finally:
        get_settings.cache_clear()


def test_logout_of_a_long_family_is_one_read_one_write(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    deps = AuthDeps(stack_env, DynamoUserStore(), DynamoSessionStore(), DynamoThrottleStore())
    email = f"{uuid.uuid4().hex}@example.com"
    logic.register(Register(email=email, password="correct horse battery"), "203.0.113.1", deps)
    pair = logic.login(Login(email=email, password="correct horse battery"), "203.0.113.1", deps)
    first = pair.refresh_token
    for _ in range(50):
        pair = logic.refresh(pair.refresh_token, deps)
    operations: list[str] = []
    original = BaseClient._make_api_call

    def record(self: BaseClient, operation: str, params: dict[str, object]) -> object:
        operations.append(operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    logic.logout(first, deps)
    assert operations == ["GetItem", "UpdateItem"]  # the token, then the family: whatever the family's size
    with pytest.raises(Unauthorized):
        logic.refresh(pair.refresh_token, deps)
