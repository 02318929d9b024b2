"""The local stack's web app serving (local/webapp.py) and CORS (functions/cors.py, the local gateway's side)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions import cors
from functions.routes import ROUTES
from local.gateway import RouteTable
from local.webapp import WebApp, browser_answer, with_local_cors
from shared.settings import get_settings

APP = "http://127.0.0.1:8123"


@pytest.fixture
def allowed_app_origin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", json.dumps([APP]))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _body(response: dict[str, Any]) -> bytes:
    return base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response["body"].encode()


def test_root_is_the_page_with_a_strict_csp() -> None:
    response = WebApp(storage_origin="http://127.0.0.1:5999").response("/")
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="js/main.js">' in _body(response)
    csp = response["headers"]["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp
    assert "unsafe" not in csp
    assert "img-src 'self' blob: http://127.0.0.1:5999" in csp
    assert response["headers"]["X-Frame-Options"] == "DENY"


def test_config_names_the_same_origin_api() -> None:
    response = WebApp().response("/config.json")
    assert json.loads(_body(response)) == {"apiBaseUrl": ""}
    assert response["headers"]["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("path", "content_type"), [("/js/main.js", "text/javascript"), ("/app.css", "text/css")])
def test_files_have_their_types(path: str, content_type: str) -> None:
    assert WebApp().response(path)["headers"]["Content-Type"].startswith(content_type)


@pytest.mark.parametrize("path", ["/../README.md", "/js/../../local/webapp.py", "/.hidden", "/nope.js", "/js"])
def test_nothing_outside_the_folder_and_no_missing_file(path: str) -> None:
    app = WebApp()
    assert not app.serves(path)
    response = app.response(path)
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["code"] == "NOT_FOUND"


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "site" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    assert not WebApp(tmp_path / "site").serves("/leak.txt")


def test_api_paths_are_not_the_web_app(allowed_app_origin: None) -> None:
    routes = RouteTable()
    assert browser_answer("GET", "/pipelines/x/nope", {}, routes) is None
    assert browser_answer("POST", "/", {}, routes) is None
    assert browser_answer("GET", "/", {}, routes) is not None
    assert {route.path for route in ROUTES}.isdisjoint({"/", "/config.json", "/index.html"})


def test_preflight_of_an_api_path_allows_the_app_origin(allowed_app_origin: None) -> None:
    answer = browser_answer("OPTIONS", "/pipelines/abc/rating", {"Origin": APP}, RouteTable())
    assert answer is not None
    assert answer["statusCode"] == 204
    headers = answer["headers"]
    assert headers["Access-Control-Allow-Origin"] == APP
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert headers["Vary"] == "Origin"


def test_preflight_from_another_origin_gets_no_allowance(allowed_app_origin: None) -> None:
    answer = browser_answer("OPTIONS", "/pipelines", {"Origin": "https://evil.example"}, RouteTable())
    assert answer is not None
    assert "Access-Control-Allow-Origin" not in answer["headers"]
    assert browser_answer("OPTIONS", "/no/such/route", {"Origin": APP}, RouteTable()) is None


def test_gateway_errors_carry_cors(allowed_app_origin: None) -> None:
    error = {"statusCode": 401, "headers": {"Content-Type": "application/json"}, "body": "{}"}
    assert with_local_cors({"origin": APP}, error)["headers"]["Access-Control-Allow-Origin"] == APP


def test_function_answers_keep_their_headers_and_gain_cors() -> None:
    event = {"headers": {"Origin": APP}}
    response = {"statusCode": 422, "multiValueHeaders": {"Content-Type": ["application/json"]}, "body": "{}"}
    out = cors.with_cors(event, response, [APP])
    assert out["multiValueHeaders"]["Access-Control-Allow-Origin"] == [APP]
    assert out["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert "Retry-After" in out["multiValueHeaders"]["Access-Control-Expose-Headers"][0]
    assert cors.with_cors(event, {"statusCode": 200}, ["*"])["headers"]["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in cors.with_cors({"headers": {}}, {"statusCode": 200}, [APP])["headers"]


def test_an_api_function_answers_errors_with_cors(allowed_app_origin: None) -> None:
    """Through a real handler: an unauthenticated call's 401 still names the allowed origin."""
    from functions.auth.handler import lambda_handler
    from local.gateway import LambdaContext

    event = {
        "resource": "/users/me",
        "path": "/users/me",
        "httpMethod": "GET",
        "headers": {"Origin": APP},
        "multiValueHeaders": {"Origin": [APP]},
        "requestContext": {"requestId": "r", "resourcePath": "/users/me", "httpMethod": "GET", "stage": "local"},
        "body": None,
        "isBase64Encoded": False,
    }
    context: Any = LambdaContext("auth", "r")  # the attributes Powertools reads, as the local gateway passes them
    response = lambda_handler(event, context)
    assert response["statusCode"] == 401
    headers = response.get("multiValueHeaders") or {k: [v] for k, v in response["headers"].items()}
    assert headers["Access-Control-Allow-Origin"] == [APP]
