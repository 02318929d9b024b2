"""Access tokens (JWT, HS256) and refresh tokens (opaque, stored hashed): issuing and verifying.

The signing secret is settings.jwt_secret locally, or read once from Secrets Manager (settings.jwt_secret_arn)
in AWS. Verification allows HS256 only and requires iss, aud, exp, iat, sub and typ="access".
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from functools import lru_cache

import jwt

from shared.aws import client
from shared.errors import Unauthorized
from shared.settings import Settings

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
MIN_SECRET_BYTES = 32  # HS256 wants a key of at least 256 bits


@lru_cache(maxsize=4)
def _secret_from_secrets_manager(arn: str, region: str, endpoint_url: str | None) -> str:
    settings = Settings.model_construct(region=region, aws_endpoint_url=endpoint_url)
    value: str = client("secretsmanager", settings).get_secret_value(SecretId=arn)["SecretString"]
    if value.lstrip().startswith("{"):
        value = str(json.loads(value)["secret"])
    return value


def signing_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        secret = settings.jwt_secret
    elif settings.jwt_secret_arn:
        secret = _secret_from_secrets_manager(settings.jwt_secret_arn, settings.region, settings.aws_endpoint_url)
    else:
        raise RuntimeError("no JWT secret configured: set JWT_SECRET or JWT_SECRET_ARN")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError("the JWT secret must be at least 256 bits")
    return secret


def issue_access_token(user_id: str, settings: Settings, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user_id,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued,
        "exp": issued + settings.access_token_ttl_s,
        "jti": str(uuid.uuid4()),
        "typ": ACCESS_TYPE,
    }
    return jwt.encode(claims, signing_secret(settings), algorithm=ALGORITHM)


def verify_access_token(token: str, settings: Settings) -> str:
    """The user id of a valid access token; anything else raises Unauthorized."""
    try:
        claims = jwt.decode(
            token,
            signing_secret(settings),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized("invalid or expired access token") from exc
    if claims.get("typ") != ACCESS_TYPE or not isinstance(claims.get("sub"), str):
        raise Unauthorized("not an access token")
    return str(claims["sub"])


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    """Refresh tokens are stored as their SHA-256: a leaked table holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()
