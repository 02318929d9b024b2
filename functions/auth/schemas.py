"""Request and response shapes of the auth endpoints (API.md, "Auth"), camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationInfo, field_validator

MAX_EMAIL_LENGTH = 254
PASSWORD_MAX_BYTES = 256
DISPLAY_NAME_MAX_BYTES = 100


class _Api(BaseModel):
    # Validators are built on first use, not at import: EmailStr's email-validator alone costs a cold start ~30 ms.
    # The pinned pydantic (2.14) builds a deferred model under a lock, so concurrent first requests are safe.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)


class Register(_Api):
    email: EmailStr = Field(description="Normalised to lower case")
    password: str = Field(min_length=10, max_length=PASSWORD_MAX_BYTES)
    display_name: str | None = Field(default=None, min_length=1, max_length=DISPLAY_NAME_MAX_BYTES, alias="displayName")

    @field_validator("email", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if len(value.encode()) > MAX_EMAIL_LENGTH:
                raise ValueError(f"at most {MAX_EMAIL_LENGTH} UTF-8 bytes")
        return value

    @field_validator("password", "display_name")
    @classmethod
    def _utf8_bytes(cls, value: str | None, info: ValidationInfo) -> str | None:
        # API.md: text limits count UTF-8 bytes (max_length above counts characters, a weaker bound).
        limit = PASSWORD_MAX_BYTES if info.field_name == "password" else DISPLAY_NAME_MAX_BYTES
        if value is not None and len(value.encode()) > limit:
            raise ValueError(f"at most {limit} UTF-8 bytes")
        return value


class Login(_Api):
    email: str = Field(max_length=MAX_EMAIL_LENGTH)
    password: str = Field(max_length=256)


class RefreshTokenBody(_Api):
    refresh_token: str = Field(alias="refreshToken", max_length=512)


class User(_Api):
    user_id: str = Field(alias="userId")
    email: str
    display_name: str = Field(alias="displayName")


class TokenPair(_Api):
    access_token: str = Field(alias="accessToken")
    refresh_token: str = Field(alias="refreshToken")
    token_type: str = Field(default="Bearer", alias="tokenType")
    expires_in: int = Field(alias="expiresIn", description="Seconds until the access token expires")
