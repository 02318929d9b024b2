"""Password hashing with argon2id at OWASP's recommended parameters (19 MiB, 2 iterations, 1 lane)."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash("a password nobody has")


def burn_verification_time(password: str) -> None:
    """Spend what a real verification costs, so an unknown email answers as slowly as a wrong password."""
    verify_password(_dummy_hash(), password)
