"""In-memory stand-ins for auth's stores (the `...Store` protocols of `functions.auth.store`), with a clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.auth.logic import AuthDeps
from functions.auth.store import Session, StoredToken, StoredUser
from tests.unit.execution_fakes import unit_settings


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeUserStore:
    def __init__(self) -> None:
        self.by_mail: dict[str, StoredUser] = {}

    def create(self, user: StoredUser) -> bool:
        if user.email in self.by_mail:
            return False
        self.by_mail[user.email] = user
        return True

    def by_email(self, email: str) -> StoredUser | None:
        return self.by_mail.get(email)

    def by_id(self, user_id: str) -> StoredUser | None:
        return next((u for u in self.by_mail.values() if u.user_id == user_id), None)


class FakeSessionStore:
    """Counts writes, so tests can tell how many a logout costs."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, StoredToken] = {}
        self.writes: list[tuple[str, str]] = []

    def start(self, session: Session) -> None:
        self.writes.append(("start", session.family_id))
        self.sessions[session.family_id] = session

    def get(self, family_id: str) -> Session | None:
        return self.sessions.get(family_id)

    def revoke(self, family_id: str) -> None:
        self.writes.append(("revoke", family_id))
        if family_id in self.sessions:
            self.sessions[family_id] = dataclasses.replace(self.sessions[family_id], revoked=True)

    def add_token(self, token: StoredToken) -> None:
        self.writes.append(("add_token", token.token_hash))
        self.tokens[token.token_hash] = token

    def token(self, token_hash: str) -> StoredToken | None:
        return self.tokens.get(token_hash)

    def use_token(self, token_hash: str) -> bool:
        self.writes.append(("use_token", token_hash))
        current = self.tokens.get(token_hash)
        if current is None or current.used:
            return False
        self.tokens[token_hash] = dataclasses.replace(current, used=True)
        return True


@dataclasses.dataclass
class _Window:
    attempts: int
    ends_at: datetime


class FakeThrottleStore:
    def __init__(self) -> None:
        self.windows: dict[str, _Window] = {}

    def take(self, key: str, limit: int, window: timedelta, now: datetime) -> datetime | None:
        current = self.windows.get(key)
        if current is None or current.ends_at <= now:
            self.windows[key] = _Window(1, now + window)
            return None
        if current.attempts >= limit:
            return current.ends_at
        current.attempts += 1
        return None

    def give_back(self, key: str, now: datetime) -> None:
        current = self.windows.get(key)
        if current is not None and current.ends_at > now and current.attempts > 0:
            current.attempts -= 1

    def clear(self, key: str) -> None:
        self.windows.pop(key, None)


@dataclasses.dataclass
class FakeAuth:
    deps: AuthDeps
    users: FakeUserStore
    sessions: FakeSessionStore
    throttles: FakeThrottleStore
    clock: FakeClock


def fake_auth(**settings: Any) -> FakeAuth:
    users, sessions, throttles, clock = FakeUserStore(), FakeSessionStore(), FakeThrottleStore(), FakeClock()
    deps = AuthDeps(
        settings=unit_settings(jwt_secret="s" * 48, **settings),
        users=users,
        sessions=sessions,
        throttles=throttles,
        clock=clock,
    )
    return FakeAuth(deps, users, sessions, throttles, clock)
