"""Auth domain: users, passwords, and refresh-token families with rotation and reuse detection.

A login starts a token family. Each refresh uses its token once (a conditional write, so two concurrent
refreshes cannot both win) and issues the next token of the family; presenting a used token again means it
leaked, so the whole family is revoked.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from functions.auth import passwords, tokens
from functions.auth.schemas import Login, Register, TokenPair, User
from shared.errors import Conflict, ServiceUnavailable, Unauthorized
from shared.messages import utc_now_iso
from shared.models import RefreshTokenRecord, UserRecord
from shared.settings import Settings

_INVALID_LOGIN = "invalid email or password"
_INVALID_REFRESH = "invalid refresh token"


def _conditional_failed(exc: PutError | UpdateError) -> bool:
    return exc.cause_response_code == "ConditionalCheckFailedException"


def user_view(record: UserRecord) -> User:
    return User(userId=record.user_id, email=record.email, displayName=record.display_name)


def register(request: Register, settings: Settings) -> User:
    email = str(request.email)
    record = UserRecord(
        email=email,
        user_id=str(uuid.uuid4()),
        display_name=request.display_name or email.split("@", 1)[0],
        password_hash=passwords.hash_password(request.password),
        created_at=utc_now_iso(),
    )
    try:
        record.save(condition=UserRecord.email.does_not_exist())
    except PutError as exc:
        if _conditional_failed(exc):
            raise Conflict("an account with this email already exists") from exc
        raise ServiceUnavailable("could not store the user") from exc
    return user_view(record)


def _issue_pair(user_id: str, family_id: str, settings: Settings) -> TokenPair:
    refresh = tokens.new_refresh_token()
    RefreshTokenRecord(
        token_hash=tokens.refresh_token_hash(refresh),
        family_id=family_id,
        user_id=user_id,
        created_at=utc_now_iso(),
        expires_at=timedelta(seconds=settings.refresh_token_ttl_s),
    ).save()
    return TokenPair(
        accessToken=tokens.issue_access_token(user_id, settings),
        refreshToken=refresh,
        expiresIn=settings.access_token_ttl_s,
    )


def _user_by_email(email: str) -> UserRecord | None:
    if not email:  # no account has an empty email, and DynamoDB rejects an empty key
        return None
    try:
        return UserRecord.get(email)
    except DoesNotExist:
        return None


def login(request: Login, settings: Settings) -> TokenPair:
    user = _user_by_email(request.email.strip().lower())
    if user is None:
        passwords.burn_verification_time(request.password)
        raise Unauthorized(_INVALID_LOGIN)
    if not passwords.verify_password(user.password_hash, request.password):
        raise Unauthorized(_INVALID_LOGIN)
    return _issue_pair(user.user_id, str(uuid.uuid4()), settings)


def revoke_family(family_id: str) -> None:
    for record in RefreshTokenRecord.by_family.query(family_id):
        if not record.revoked:
            record.update(actions=[RefreshTokenRecord.revoked.set(True)])


def _find(refresh_token: str) -> RefreshTokenRecord | None:
    try:
        return RefreshTokenRecord.get(tokens.refresh_token_hash(refresh_token))
    except DoesNotExist:
        return None


def refresh(refresh_token: str, settings: Settings) -> TokenPair:
    record = _find(refresh_token)
    if record is None or record.revoked or record.expires_at.timestamp() <= time.time():
        raise Unauthorized(_INVALID_REFRESH)
    if record.used:
        revoke_family(record.family_id)
        raise Unauthorized(_INVALID_REFRESH)
    try:
        record.update(
            actions=[RefreshTokenRecord.used.set(True)],
            condition=(RefreshTokenRecord.used == False) & (RefreshTokenRecord.revoked == False),  # noqa: E712
        )
    except UpdateError as exc:
        if not _conditional_failed(exc):
            raise ServiceUnavailable("could not rotate the refresh token") from exc
        revoke_family(record.family_id)  # a concurrent use of the same token: treat as reuse
        raise Unauthorized(_INVALID_REFRESH) from exc
    return _issue_pair(record.user_id, record.family_id, settings)


def logout(refresh_token: str) -> None:
    """Revoke the token's family; unknown or revoked tokens are fine (RFC 7009), so logout is idempotent."""
    record = _find(refresh_token)
    if record is not None:
        revoke_family(record.family_id)


def me(user_id: str) -> User:
    for record in UserRecord.by_user_id.query(user_id, limit=1):
        return user_view(record)
    raise Unauthorized("the account no longer exists")
