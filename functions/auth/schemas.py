"""Request and response shapes of the auth endpoints (API.md, "Auth"), camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

MAX_EMAIL_LENGTH = 254


class _Api(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Register(_Api):
    email: EmailStr = Field(description="Normalised to lower case")
    password: str = Field(min_length=10, max_length=256)
    display_name: str | None = Field(default=None, min_length=1, max_length=100, alias="displayName")

    @field_validator("email", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if len(value) > MAX_EMAIL_LENGTH:
                raise ValueError(f"at most {MAX_EMAIL_LENGTH} characters")
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
