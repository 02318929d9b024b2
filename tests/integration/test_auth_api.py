"""The auth API over HTTP on the local gateway (API.md, "Auth" and the auth convention), JWT attacks included."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from functions.auth import tokens
from functions.routes import ROUTES
from shared.settings import Settings
from tests.integration.conftest import PASSWORD

if TYPE_CHECKING:
    from tests.integration.conftest import TestUser

USER_KEYS = {"userId", "email", "displayName"}
PAIR_KEYS = {"accessToken", "refreshToken", "tokenType", "expiresIn"}


def _email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


def _login(api: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return api.post("/auth/login", json={"email": email, "password": password})


def _refresh(api: httpx.Client, refresh_token: str) -> httpx.Response:
    return api.post("/auth/refresh", json={"refreshToken": refresh_token})


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("code"), str)
    assert isinstance(body.get("message"), str)
    if code is not None:
        assert body["code"] == code
    return body


def _assert_pair(response: httpx.Response, settings: Settings) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    assert set(pair) == PAIR_KEYS
    assert pair["tokenType"] == "Bearer"
    assert pair["expiresIn"] == settings.access_token_ttl_s
    assert pair["accessToken"].count(".") == 2  # a JWT
    assert pair["refreshToken"]
    return pair


# --- register ---


def test_register_answers_201_with_the_user(api: httpx.Client) -> None:
    email = _email()
    response = api.post("/auth/register", json={"email": email, "password": PASSWORD, "displayName": "Ada L."})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == USER_KEYS
    assert body == {"userId": body["userId"], "email": email, "displayName": "Ada L."}
    uuid.UUID(body["userId"])


def test_register_normalises_the_email_and_defaults_the_display_name(api: httpx.Client) -> None:
    local = f"Mixed.Case-{uuid.uuid4().hex[:8]}"
    response = api.post("/auth/register", json={"email": f"{local}@Example.COM", "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == f"{local.lower()}@example.com"
    assert body["displayName"] == local.lower()
    # Login works with any case of the address.
    assert _login(api, f"{local.upper()}@EXAMPLE.com").status_code == 200


def test_duplicate_email_is_409_whatever_its_case(api: httpx.Client) -> None:
    email = _email()
    assert api.post("/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    _assert_error(api.post("/auth/register", json={"email": email, "password": "another password"}), 409)
    _assert_error(api.post("/auth/register", json={"email": email.upper(), "password": PASSWORD}), 409)


INVALID_REGISTRATIONS: list[dict[str, Any]] = [
    {"email": "not-an-email", "password": PASSWORD},
    {"email": "two@@example.com", "password": PASSWORD},
    {"email": "", "password": PASSWORD},
    {"email": f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.com", "password": PASSWORD},  # 259 chars
    {"email": "short@example.com", "password": "x" * 9},
    {"email": "long@example.com", "password": "x" * 257},
    {"email": "name@example.com", "password": PASSWORD, "displayName": ""},
    {"email": "name@example.com", "password": PASSWORD, "displayName": "n" * 101},
    # Text limits count UTF-8 bytes: 51 two-byte characters are 102 bytes, 129 are 258.
    {"email": "name@example.com", "password": PASSWORD, "displayName": "é" * 51},
    {"email": "name@example.com", "password": "é" * 129},
    {"email": "number@example.com", "password": 1234567890},
    {"password": PASSWORD},
    {"email": "nopassword@example.com"},
]


def test_invalid_registrations_are_422_and_create_nothing(api: httpx.Client) -> None:
    wrong = []
    for request_body in INVALID_REGISTRATIONS:
        body = dict(request_body)
        if body.get("email", "").endswith("@example.com"):
            body["email"] = f"{uuid.uuid4().hex[:8]}-{body['email']}"
        response = api.post("/auth/register", json=body)
        error = response.json()
        if (response.status_code, error.get("code")) != (422, "VALIDATION_FAILED") or not error.get("details"):
            wrong.append((body, response.status_code, error))
        elif "@" in body.get("email", "") and len(body["email"]) <= 254:
            # Nothing was created: the address is still unknown.
            assert _login(api, body["email"]).status_code == 401
    assert wrong == []


def test_password_and_display_name_limits_are_inclusive(api: httpx.Client) -> None:
    ten = api.post("/auth/register", json={"email": _email(), "password": "p" * 10, "displayName": "d"})
    assert ten.status_code == 201, ten.text
    long = api.post("/auth/register", json={"email": _email(), "password": "p" * 256, "displayName": "d" * 100})
    assert long.status_code == 201, long.text
    email = _email()
    wide = api.post("/auth/register", json={"email": email, "password": "é" * 128, "displayName": "é" * 50})
    assert wide.status_code == 201, wide.text
    assert wide.json()["displayName"] == "é" * 50
    assert _login(api, email, "é" * 128).status_code == 200


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login", "/auth/refresh", "/auth/logout"])
def test_malformed_bodies_are_400(api: httpx.Client, path: str) -> None:
    for raw in [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", '{"email": "\u00e9"}'.encode("latin-1")]:
        response = api.post(path, content=raw, headers={"Content-Type": "application/json"})
        _assert_error(response, 400, "BAD_REQUEST")


# --- login ---


def test_login_answers_a_token_pair(api: httpx.Client, stack_env: Settings) -> None:
    email = _email()
    user_id = api.post("/auth/register", json={"email": email, "password": PASSWORD}).json()["userId"]
    pair = _assert_pair(_login(api, email), stack_env)
    assert tokens.verify_access_token(pair["accessToken"], stack_env) == user_id


def test_wrong_password_and_unknown_email_get_the_same_401(api: httpx.Client) -> None:
    email = _email()
    assert api.post("/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    wrong_password = _assert_error(_login(api, email, "not the password"), 401)
    unknown_email = _assert_error(_login(api, _email()), 401)
    assert wrong_password == unknown_email


# --- refresh ---


def test_refresh_rotates_the_pair(api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings) -> None:
    user = new_user()
    pair = _assert_pair(_refresh(api, user.refresh_token), stack_env)
    assert pair["refreshToken"] != user.refresh_token
    assert tokens.verify_access_token(pair["accessToken"], stack_env) == user.user_id
    me = api.get("/users/me", headers={"Authorization": f"Bearer {pair['accessToken']}"})
    assert me.status_code == 200
    assert me.json()["userId"] == user.user_id
    # The new refresh token works in turn.
    _assert_pair(_refresh(api, pair["refreshToken"]), stack_env)


def test_reusing_a_refresh_token_is_401_and_revokes_its_whole_family(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    user = new_user()
    second = _assert_pair(_refresh(api, user.refresh_token), stack_env)
    third = _assert_pair(_refresh(api, second["refreshToken"]), stack_env)

    _assert_error(_refresh(api, user.refresh_token), 401)  # reuse of a used token
    _assert_error(_refresh(api, third["refreshToken"]), 401)  # the newest of the family is revoked too
    _assert_error(_refresh(api, second["refreshToken"]), 401)


def test_reuse_revokes_only_that_family(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    user = new_user()
    other_session = _assert_pair(_login(api, user.email), stack_env)
    _assert_pair(_refresh(api, user.refresh_token), stack_env)
    _assert_error(_refresh(api, user.refresh_token), 401)
    _assert_pair(_refresh(api, other_session["refreshToken"]), stack_env)


@pytest.mark.parametrize("token", ["", "unknown-token", "x" * 200])
def test_unknown_refresh_token_is_401(api: httpx.Client, token: str) -> None:
    _assert_error(_refresh(api, token), 401)


def test_refresh_without_a_token_is_422(api: httpx.Client) -> None:
    _assert_error(api.post("/auth/refresh", json={}), 422)


# --- logout ---


def test_logout_revokes_the_family_and_is_idempotent(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    user = new_user()
    rotated = _assert_pair(_refresh(api, user.refresh_token), stack_env)
    response = api.post("/auth/logout", json={"refreshToken": rotated["refreshToken"]})
    assert response.status_code == 204
    assert response.content == b""
    _assert_error(_refresh(api, rotated["refreshToken"]), 401)
    # Again, and with a token the server never issued: still 204 (RFC 7009).
    assert api.post("/auth/logout", json={"refreshToken": rotated["refreshToken"]}).status_code == 204
    assert api.post("/auth/logout", json={"refreshToken": "never-issued"}).status_code == 204


def test_logout_needs_no_access_token_and_leaves_other_sessions(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    user = new_user()
    other_session = _assert_pair(_login(api, user.email), stack_env)
    assert api.post("/auth/logout", json={"refreshToken": user.refresh_token}).status_code == 204
    _assert_error(_refresh(api, user.refresh_token), 401)
    _assert_pair(_refresh(api, other_session["refreshToken"]), stack_env)


# --- /users/me ---


def test_me_answers_the_callers_profile(api: httpx.Client, new_user: Callable[..., TestUser]) -> None:
    user = new_user("Grace")
    response = api.get("/users/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == {"userId": user.user_id, "email": user.email, "displayName": "Grace"}


# --- JWT attacks on protected routes ---


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _claims(user_id: str, settings: Settings, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "typ": "access",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forge(claims: dict[str, Any], secret: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = payload[:5] + ("A" if payload[5] != "A" else "B") + payload[6:]
    return f"{header}.{flipped}.{signature}"


def _escalated(token: str, other_user: str) -> str:
    """The same token with its subject changed to another user, keeping the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64(claims | {'sub': other_user})}.{signature}"


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}."


def _attacks(user: TestUser, settings: Settings) -> dict[str, str | None]:
    """The Authorization header of each attack on `user`'s identity (None: no header at all)."""
    secret = settings.jwt_secret
    assert secret, "the local stack signs with settings.jwt_secret"
    claims = _claims(user.user_id, settings)
    past = time.time() - 2 * settings.access_token_ttl_s
    return {
        "missing": None,
        "empty": "",
        "bearer-only": "Bearer",
        "not-bearer": f"Basic {user.access_token}",
        "no-scheme": user.access_token,
        "garbage": "Bearer not.a.jwt",
        "random": f"Bearer {uuid.uuid4().hex}",
        "tampered-payload": f"Bearer {_tampered(user.access_token)}",
        "other-subject": f"Bearer {_escalated(user.access_token, str(uuid.uuid4()))}",
        "alg-none": f"Bearer {_unsigned(claims)}",
        "alg-None": f"Bearer {_unsigned(claims, 'None')}",
        "signature-stripped": "Bearer " + user.access_token.rsplit(".", 1)[0] + ".",
        "wrong-secret": f"Bearer {_forge(claims, 'x' * 48)}",
        "hs512": f"Bearer {_forge(claims, secret, 'HS512')}",
        "expired-forged": f"Bearer {_forge(_claims(user.user_id, settings, iat=int(past), exp=int(past) + 1), secret)}",
        "expired-issued": f"Bearer {tokens.issue_access_token(user.user_id, settings, now=past)}",
        "refresh-as-access": f"Bearer {user.refresh_token}",
        "typ-refresh": f"Bearer {_forge(_claims(user.user_id, settings, typ='refresh'), secret)}",
        "typ-missing": f"Bearer {_forge(_claims(user.user_id, settings, typ=None), secret)}",
        "aud-wrong": f"Bearer {_forge(_claims(user.user_id, settings, aud='another-api'), secret)}",
        "aud-missing": f"Bearer {_forge(_claims(user.user_id, settings, aud=None), secret)}",
        "iss-wrong": f"Bearer {_forge(_claims(user.user_id, settings, iss='someone-else'), secret)}",
        "iss-missing": f"Bearer {_forge(_claims(user.user_id, settings, iss=None), secret)}",
        "exp-missing": f"Bearer {_forge(_claims(user.user_id, settings, exp=None), secret)}",
        "sub-missing": f"Bearer {_forge(_claims(user.user_id, settings, sub=None), secret)}",
    }


def test_protected_routes_reject_bad_tokens_with_401(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    user = new_user()
    accepted = []
    attacks = _attacks(user, stack_env)
    assert len(attacks) == 25
    for attack, authorization in attacks.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        for path in ("/users/me", "/executions"):
            response = api.get(path, headers=headers)
            if (response.status_code, response.json().get("code")) != (401, "UNAUTHORIZED"):
                accepted.append((attack, path, response.status_code, response.text))
    assert accepted == []
    # The genuine token of the same user works, so each 401 was the token's fault.
    for path in ("/users/me", "/executions"):
        assert api.get(path, headers=user.headers).status_code == 200


def test_a_forged_token_with_the_real_secret_and_claims_is_accepted(
    api: httpx.Client, new_user: Callable[..., TestUser], stack_env: Settings
) -> None:
    """The control of the attacks above: only the deliberate change makes them fail."""
    user = new_user()
    assert stack_env.jwt_secret
    token = _forge(_claims(user.user_id, stack_env), stack_env.jwt_secret)
    response = api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["userId"] == user.user_id


def test_every_protected_route_needs_a_token(api: httpx.Client) -> None:
    protected = [(r.method, r.path.format_map(defaultdict(lambda: str(uuid.uuid4())))) for r in ROUTES if r.authorized]
    assert len(protected) >= 17
    wrong = []
    for method, path in protected:
        response = api.request(method, path, json={})
        if (response.status_code, response.json().get("code")) != (401, "UNAUTHORIZED"):
            wrong.append((method, path, response.status_code))
    assert wrong == []


# --- public routes: health and docs ---


def test_health_is_ok_without_a_token(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_document_describes_every_route_without_a_token(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    served = {(route.method, route.path) for route in ROUTES if route.path not in {"/openapi.json", "/docs"}}
    assert documented == served
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}]
    # Only the routes API.md names as public opt out of the token.
    public = {
        (m.upper(), p) for p, item in document["paths"].items() for m, op in item.items() if op.get("security") == []
    }
    assert public == {(r.method, r.path) for r in ROUTES if not r.authorized and r.path in document["paths"]}
    assert public >= {("POST", "/auth/register"), ("POST", "/auth/login"), ("GET", "/health")}


def test_docs_serve_swagger_ui_without_a_token(api: httpx.Client) -> None:
    response = api.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger" in response.text.lower()


def test_unknown_routes_are_404_with_an_error_body(api: httpx.Client) -> None:
    for method, path in [("GET", "/nope"), ("GET", "/auth/login"), ("PATCH", "/pipelines"), ("POST", "/health")]:
        _assert_error(api.request(method, path), 404, "NOT_FOUND")
