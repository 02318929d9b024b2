"""Routes of the auth API (API.md, "Auth"): parse, one domain call, answer. Token answers carry
`Cache-Control: no-store` (RFC 6749 5.1): no cache or proxy may keep a token.

Each route imports the domain module when it first runs: it brings in pynamodb, botocore, PyJWT and argon2,
which a cold start would otherwise load at import although only the schemas are needed to route and validate.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from functions.auth.dependencies import auth_deps
from functions.auth.schemas import Login, RefreshTokenBody, Register, TokenPair, User
from functions.http import caller_id, source_ip
from functions.openapi import responses

router = APIGatewayRouter()


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(status: int, model: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=model.model_dump(by_alias=True),
        headers=headers,
    )


@router.post(
    "/auth/register", summary="Create an account", responses=responses(201, "Created", 400, 409, 429, public=True)
)
def register(body: Annotated[Register, Body()]) -> Response[User]:
    from functions.auth import logic

    return _json(201, logic.register(body, source_ip(router), auth_deps()))


@router.post("/auth/login", summary="Log in", responses=responses(200, "A token pair", 400, 401, 429, public=True))
def login(body: Annotated[Login, Body()]) -> Response[TokenPair]:
    from functions.auth import logic

    return _json(200, logic.login(body, source_ip(router), auth_deps()), _NO_STORE)


@router.post(
    "/auth/refresh", summary="Rotate a refresh token", responses=responses(200, "A new pair", 400, 401, public=True)
)
def refresh(body: Annotated[RefreshTokenBody, Body()]) -> Response[TokenPair]:
    from functions.auth import logic

    return _json(200, logic.refresh(body.refresh_token, auth_deps()), _NO_STORE)


@router.post(
    "/auth/logout", summary="Revoke a refresh token's family", responses=responses(204, "Revoked", 400, public=True)
)
def logout(body: Annotated[RefreshTokenBody, Body()]) -> Response[None]:
    from functions.auth import logic

    logic.logout(body.refresh_token, auth_deps())
    return Response(status_code=204)


@router.get("/users/me", summary="The caller's profile", responses=responses(200, "The caller"))
def me() -> Response[User]:
    from functions.auth import logic

    return _json(200, logic.me(caller_id(router), auth_deps()))
