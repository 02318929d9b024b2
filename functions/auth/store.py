"""Data access of auth: users, sessions (refresh-token families and their tokens) and throttling counters.

Shaped like `functions.executions.store.ExecutionStore`: the domain sees small dataclasses and the `...Store`
protocols below (tests pass in-memory fakes); the DynamoDB implementations make every write that can race a
conditional one, report a failed condition as a plain result (`False`, `None`), and turn any other DynamoDB
failure into `StoreUnavailable` (503 with API.md's error body).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from functions.dynamodb import CONDITION_FAILED
from functions.dynamodb import dynamodb_errors as _dynamodb
from shared.models import RefreshTokenRecord, SessionRecord, ThrottleRecord, UserRecord

# Rounds of a throttle window's read-and-retry under contention before answering "throttled" to be safe.
_THROTTLE_ROUNDS = 3


@dataclass(frozen=True)
class StoredUser:
    user_id: str
    email: str
    display_name: str
    password_hash: str
    created_at: str


@dataclass(frozen=True)
class Session:
    """A refresh-token family: one per login, revoked as a whole, over at `ends_at` whatever the rotations."""

    family_id: str
    user_id: str
    created_at: str
    ends_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class StoredToken:
    """A refresh token by its SHA-256; `used` once it has been exchanged for the next one."""

    token_hash: str
    family_id: str
    user_id: str
    created_at: str
    expires_at: datetime
    used: bool = False


class UserStore(Protocol):
    def create(self, user: StoredUser) -> bool:
        """Store a new user; False when the email is taken."""

    def by_email(self, email: str) -> StoredUser | None: ...

    def by_id(self, user_id: str) -> StoredUser | None: ...


class SessionStore(Protocol):
    def start(self, session: Session) -> None: ...

    def get(self, family_id: str) -> Session | None:
        """A strongly consistent read: a revocation that has answered is always seen."""

    def revoke(self, family_id: str) -> None:
        """One write, whatever the family's size; a family that does not exist stays absent."""

    def add_token(self, token: StoredToken) -> None: ...

    def token(self, token_hash: str) -> StoredToken | None:
        """A strongly consistent read."""

    def use_token(self, token_hash: str) -> bool:
        """Mark the token used; False when it already was (a reuse, or a concurrent refresh won)."""


class ThrottleStore(Protocol):
    def take(self, key: str, limit: int, window: timedelta, now: datetime) -> datetime | None:
        """Count one attempt in `key`'s window (which starts at its first attempt and lasts `window`).

        None when it was within `limit`; else the end of the window, until which no attempt is counted."""

    def give_back(self, key: str, now: datetime) -> None:
        """Uncount one attempt of the live window (an attempt that turned out not to count)."""

    def clear(self, key: str) -> None: ...


def _applied(write: Callable[[], object], what: str) -> bool:
    """Run a conditional write; False when its condition did not hold."""
    with _dynamodb(what):
        try:
            write()
        except PynamoDBException as exc:
            if exc.cause_response_code == CONDITION_FAILED:
                return False
            raise
    return True


_Record = TypeVar("_Record", bound=Model)


def _consistent_get(model: type[_Record], key: str, what: str) -> _Record | None:
    """The record of `model` under `key`, read consistently; None when there is none."""
    with _dynamodb(what):
        try:
            return model.get(key, consistent_read=True)
        except model.DoesNotExist:
            return None


class DynamoUserStore:
    """Users keyed by email (unique by a conditional put), found by id through the userId index."""

    def create(self, user: StoredUser) -> bool:
        record = UserRecord(
            email=user.email,
            user_id=user.user_id,
            display_name=user.display_name,
            password_hash=user.password_hash,
            created_at=user.created_at,
        )
        return _applied(lambda: record.save(condition=UserRecord.email.does_not_exist()), "users")

    def by_email(self, email: str) -> StoredUser | None:
        if not email:  # no account has an empty email, and DynamoDB rejects an empty key
            return None
        with _dynamodb("users"):
            try:
                return _user(UserRecord.get(email))
            except UserRecord.DoesNotExist:
                return None

    def by_id(self, user_id: str) -> StoredUser | None:
        with _dynamodb("users"):
            for record in UserRecord.by_user_id.query(user_id, limit=1):
                return _user(record)
        return None


def _user(record: UserRecord) -> StoredUser:
    return StoredUser(
        user_id=record.user_id,
        email=record.email,
        display_name=record.display_name,
        password_hash=record.password_hash,
        created_at=record.created_at,
    )


class DynamoSessionStore:
    """Families in the sessions table, tokens in the refresh-tokens table; both expire by TTL."""

    def start(self, session: Session) -> None:
        record = SessionRecord(
            family_id=session.family_id,
            user_id=session.user_id,
            created_at=session.created_at,
            expires_at=session.ends_at,
            revoked=session.revoked,
        )
        with _dynamodb("sessions"):
            record.save(condition=SessionRecord.family_id.does_not_exist())

    def get(self, family_id: str) -> Session | None:
        record = _consistent_get(SessionRecord, family_id, "sessions")
        if record is None:
            return None
        return Session(
            family_id=record.family_id,
            user_id=record.user_id,
            created_at=record.created_at,
            ends_at=record.expires_at,
            revoked=bool(record.revoked),
        )

    def revoke(self, family_id: str) -> None:
        record = SessionRecord(family_id)
        condition = SessionRecord.family_id.exists()
        _applied(lambda: record.update(actions=[SessionRecord.revoked.set(True)], condition=condition), "sessions")

    def add_token(self, token: StoredToken) -> None:
        record = RefreshTokenRecord(
            token_hash=token.token_hash,
            family_id=token.family_id,
            user_id=token.user_id,
            created_at=token.created_at,
            expires_at=token.expires_at,
            used=token.used,
        )
        with _dynamodb("refresh tokens"):
            record.save(condition=RefreshTokenRecord.token_hash.does_not_exist())

    def token(self, token_hash: str) -> StoredToken | None:
        record = _consistent_get(RefreshTokenRecord, token_hash, "refresh tokens")
        if record is None:
            return None
        return StoredToken(
            token_hash=record.token_hash,
            family_id=record.family_id,
            user_id=record.user_id,
            created_at=record.created_at,
            expires_at=record.expires_at,
            used=bool(record.used),
        )

    def use_token(self, token_hash: str) -> bool:
        record = RefreshTokenRecord(token_hash)
        condition = RefreshTokenRecord.token_hash.exists() & (RefreshTokenRecord.used == False)  # noqa: E712
        return _applied(
            lambda: record.update(actions=[RefreshTokenRecord.used.set(True)], condition=condition), "refresh tokens"
        )


class DynamoThrottleStore:
    """Counters whose window starts with their first attempt; TTL removes them, but every check reads the end
    itself (DynamoDB's TTL deletes within days, not on the second)."""

    def take(self, key: str, limit: int, window: timedelta, now: datetime) -> datetime | None:
        for _ in range(_THROTTLE_ROUNDS):
            if self._count_in_live_window(key, limit, now):
                return None
            current = self._get(key)
            if current is not None and current.expires_at > now:
                if current.attempts >= limit:
                    return current.expires_at
                continue  # a concurrent attempt opened the window in between: count in it
            if self._open_window(key, now + window, now):
                return None
        return now + window  # contention on one key for every round: safer to answer throttled

    def _count_in_live_window(self, key: str, limit: int, now: datetime) -> bool:
        record = ThrottleRecord(key)
        condition = (ThrottleRecord.expires_at > now) & (ThrottleRecord.attempts < limit)
        return _applied(
            lambda: record.update(actions=[ThrottleRecord.attempts.add(1)], condition=condition), "throttles"
        )

    def _open_window(self, key: str, ends_at: datetime, now: datetime) -> bool:
        record = ThrottleRecord(key, attempts=1, expires_at=ends_at)
        condition = ThrottleRecord.throttle_key.does_not_exist() | (ThrottleRecord.expires_at <= now)
        return _applied(lambda: record.save(condition=condition), "throttles")

    def give_back(self, key: str, now: datetime) -> None:
        record = ThrottleRecord(key)
        condition = (ThrottleRecord.expires_at > now) & (ThrottleRecord.attempts > 0)
        _applied(lambda: record.update(actions=[ThrottleRecord.attempts.add(-1)], condition=condition), "throttles")

    def clear(self, key: str) -> None:
        with _dynamodb("throttles"):
            ThrottleRecord(key).delete()

    @staticmethod
    def _get(key: str) -> ThrottleRecord | None:
        return _consistent_get(ThrottleRecord, key, "throttles")
