"""The web app and CORS over HTTP through the local gateway: the page at `/` beside unchanged API paths, a
preflight answered for API paths, CORS on the functions' answers and the gateway's own errors alike, and the
uploads bucket accepting the page's cross-origin PUT."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest

from shared.settings import Settings
from tests.integration.conftest import register_and_login

APP = "http://127.0.0.1:8000"


@pytest.fixture
def app_origin(stack_env: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", json.dumps([APP]))
    from shared.settings import get_settings

    get_settings.cache_clear()
    return APP


def test_the_page_and_its_config_beside_the_api(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert api.get("/config.json").json() == {"apiBaseUrl": ""}
    assert api.get("/health").json() == {"status": "ok"}
    missing = api.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    assert api.post("/").status_code == 404


def test_preflight_and_answers_name_the_allowed_origin(api: httpx.Client, app_origin: str) -> None:
    preflight = api.options("/pipelines", headers={"Origin": app_origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == app_origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    denied = api.get("/users/me", headers={"Origin": app_origin})  # the gateway's own 401
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == app_origin
    user = register_and_login(api)
    invalid = api.post("/pipelines", json={"name": ""}, headers={**user.headers, "Origin": app_origin})
    assert invalid.status_code == 422  # a function's error answer
    assert invalid.headers["access-control-allow-origin"] == app_origin
    foreign = api.get("/users/me", headers={**user.headers, "Origin": "https://elsewhere.example"})
    assert foreign.status_code == 200
    assert "access-control-allow-origin" not in foreign.headers


def test_the_uploads_bucket_takes_a_cross_origin_put(api: httpx.Client, stack_env: Settings) -> None:
    s3 = boto3.client("s3", endpoint_url=stack_env.aws_endpoint_url, region_name=stack_env.region)
    (rule,) = s3.get_bucket_cors(Bucket=stack_env.uploads_bucket)["CORSRules"]
    assert rule["AllowedMethods"] == ["PUT"]
    preflight = httpx.options(
        f"{stack_env.aws_endpoint_url}/{stack_env.uploads_bucket}/some/key",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200


@pytest.mark.timeout(120)
def test_a_stack_whose_start_fails_after_binding_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's port is bound early (CORS names its origin); a start that fails later must not hang stop()."""
    import os
    from pathlib import Path

    from local.stack import LocalStack

    def broken(self: LocalStack) -> None:
        raise RuntimeError("the consumers failed")

    monkeypatch.setattr(LocalStack, "_start_consumers", broken)
    stack = LocalStack(Path(os.environ.get("STAGEHUB_MODELS_DIR", ".cache/models")), port=0, with_worker=False)
    with pytest.raises(RuntimeError, match="consumers failed"):
        stack.start()
    bound = stack.url
    stack.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{bound}/health", timeout=2)
