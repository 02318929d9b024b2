"""Auth domain: users, passwords, login throttling, and refresh-token families with rotation and reuse detection.

A login starts a family (one session record). Each refresh uses its token once (a conditional write, so two
concurrent refreshes cannot both win) and issues the next token of the family; presenting a used token again
means it leaked, so the family is revoked. Revoking is one write on the family record, which every refresh reads
(strongly consistent) before it uses its token: a logout that has answered wins over any refresh, even one that
raced it, since the token such a refresh issued is checked against the family when it is used. A family ends
`session_lifetime_s` after its login whatever the rotations.

Throttling (API.md "Login throttling") counts an attempt before the password is checked and gives it back when
the login succeeds, so concurrent guesses cannot overrun a limit: per email (hashed, whether or not the account
exists, so a 429 reveals nothing), per client address for failed logins, and per client address for
registrations. The counters live in DynamoDB, so they hold across Lambda instances.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from functions.auth import passwords, tokens
from functions.auth.schemas import Login, Register, TokenPair, User
from functions.auth.store import Session, SessionStore, StoredToken, StoredUser, ThrottleStore, UserStore
from shared.errors import Conflict, Throttled, Unauthorized
from shared.settings import Settings

_INVALID_LOGIN = "invalid email or password"
_INVALID_REFRESH = "invalid refresh token"
_ADDRESS_WINDOW = timedelta(minutes=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuthDeps:
    """The auth domain's collaborators (DynamoDB stores in the Lambda function, fakes in unit tests)."""

    settings: Settings
    users: UserStore
    sessions: SessionStore
    throttles: ThrottleStore
    clock: Callable[[], datetime] = field(default=utc_now)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_view(user: StoredUser) -> User:
    return User(userId=user.user_id, email=user.email, displayName=user.display_name)


# --- throttling ---


def email_throttle_key(email: str) -> str:
    """Hashed: the table holds no addresses, and unknown emails are counted exactly as known ones."""
    return "login-email#" + hashlib.sha256(email.encode()).hexdigest()


def login_address_key(source_ip: str) -> str:
    return f"login-address#{source_ip}"


def register_address_key(source_ip: str) -> str:
    return f"register-address#{source_ip}"


def _count_attempt(deps: AuthDeps, key: str, limit: int, window: timedelta, message: str) -> None:
    now = deps.clock()
    until = deps.throttles.take(key, limit, window, now)
    if until is not None:
        raise Throttled(message, retry_after_s=math.ceil((until - now).total_seconds()))


# --- users ---


def register(request: Register, source_ip: str, deps: AuthDeps) -> User:
    settings = deps.settings
    _count_attempt(
        deps,
        register_address_key(source_ip),
        settings.registrations_per_address,
        _ADDRESS_WINDOW,
        "too many registrations from this address",
    )
    email = str(request.email)
    user = StoredUser(
        user_id=str(uuid.uuid4()),
        email=email,
        display_name=request.display_name or email.split("@", 1)[0],
        password_hash=passwords.hash_password(request.password),
        created_at=_iso(deps.clock()),
    )
    if not deps.users.create(user):
        raise Conflict("an account with this email already exists")
    return user_view(user)


def me(user_id: str, deps: AuthDeps) -> User:
    user = deps.users.by_id(user_id)
    if user is None:
        raise Unauthorized("the account no longer exists")
    return user_view(user)


# --- sessions ---


def login(request: Login, source_ip: str, deps: AuthDeps) -> TokenPair:
    settings = deps.settings
    email = request.email.strip().lower()
    address_key, email_key = login_address_key(source_ip), email_throttle_key(email)
    _count_attempt(
        deps, address_key, settings.login_failures_per_address, _ADDRESS_WINDOW, "too many failed logins from here"
    )
    window = timedelta(seconds=settings.login_failure_window_s)
    _count_attempt(deps, email_key, settings.login_failures_per_email, window, "too many failed logins for this email")
    user = _verified_user(email, request.password, deps)
    # Not a failure after all: the email's count starts again, and the address gets its attempt back.
    deps.throttles.clear(email_key)
    deps.throttles.give_back(address_key, deps.clock())
    return _start_session(user.user_id, deps)


def _verified_user(email: str, password: str, deps: AuthDeps) -> StoredUser:
    """The user whose password this is; an unknown email costs the same time as a wrong password."""
    user = deps.users.by_email(email)
    if user is None:
        passwords.burn_verification_time(password)
        raise Unauthorized(_INVALID_LOGIN)
    if not passwords.verify_password(user.password_hash, password):
        raise Unauthorized(_INVALID_LOGIN)
    return user


def _start_session(user_id: str, deps: AuthDeps) -> TokenPair:
    now = deps.clock()
    session = Session(
        family_id=str(uuid.uuid4()),
        user_id=user_id,
        created_at=_iso(now),
        ends_at=now + timedelta(seconds=deps.settings.session_lifetime_s),
    )
    deps.sessions.start(session)
    return _issue_pair(session, now, deps)


def _issue_pair(session: Session, now: datetime, deps: AuthDeps) -> TokenPair:
    settings = deps.settings
    refresh_token = tokens.new_refresh_token()
    deps.sessions.add_token(
        StoredToken(
            token_hash=tokens.refresh_token_hash(refresh_token),
            family_id=session.family_id,
            user_id=session.user_id,
            created_at=_iso(now),
            expires_at=min(now + timedelta(seconds=settings.refresh_token_ttl_s), session.ends_at),
        )
    )
    return TokenPair(
        accessToken=tokens.issue_access_token(session.user_id, settings, now=now.timestamp()),
        refreshToken=refresh_token,
        expiresIn=settings.access_token_ttl_s,
    )


def refresh(refresh_token: str, deps: AuthDeps) -> TokenPair:
    now = deps.clock()
    token = deps.sessions.token(tokens.refresh_token_hash(refresh_token))
    if token is None or token.expires_at <= now:
        raise Unauthorized(_INVALID_REFRESH)
    session = deps.sessions.get(token.family_id)
    if session is None or session.revoked or session.ends_at <= now:
        raise Unauthorized(_INVALID_REFRESH)
    if token.used or not deps.sessions.use_token(token.token_hash):
        # Presented again (or by two refreshes at once): the token leaked, so the whole family goes.
        deps.sessions.revoke(session.family_id)
        raise Unauthorized(_INVALID_REFRESH)
    return _issue_pair(session, now, deps)


def logout(refresh_token: str, deps: AuthDeps) -> None:
    """Revoke the token's family; unknown or revoked tokens are fine (RFC 7009), so logout is idempotent."""
    token = deps.sessions.token(tokens.refresh_token_hash(refresh_token))
    if token is not None:
        deps.sessions.revoke(token.family_id)
