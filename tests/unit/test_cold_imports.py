"""Handler modules import only what routing and validation need; the heavy dependencies wait for first use.

Each handler is imported in a fresh interpreter and the modules it loaded are checked. A failure here means a
cold start pays again for something deferred on purpose (see functions.observability, shared.aws, the routes
modules and functions.docs.handler); timing is not asserted, machines are too noisy for that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.routes import (
    API_FUNCTIONS,
    AUTHORIZER_MODULE,
    DLQ_HANDLER_MODULE,
    RESULTS_CONSUMER_MODULE,
    SWEEP_MODULE,
    WEBHOOK_SENDER_MODULE,
)
from infra.packaging import LAMBDA_PYTHON_VERSION, function_asset_dir, runtime_python

ROOT = Path(__file__).resolve().parents[2]

# Deferred in every handler: the X-Ray SDK (built with the tracer on the first invocation), pynamodb and the
# records (bound on the first request), botocore's client machinery (the first client), boto3 (never used),
# the domain modules (imported by the routes when they first run) and the S3 and SQS wrappers.
EVERYWHERE = (
    "aws_xray_sdk",
    "pynamodb",
    "shared.models",
    "botocore.session",
    "botocore.client",
    "boto3",
    "s3transfer",
    "argon2",
    "email_validator",  # auth's schemas build their validators, EmailStr's included, on first use
    "functions.auth.logic",
    "functions.pipelines.logic",
    "functions.executions.logic",
    "functions.executions.store",
    "shared.storage",
    "shared.queues",
)
# Only the authorizer verifies tokens, and only it reads the settings at import.
NOT_AUTHORIZER = (*EVERYWHERE, "jwt", "shared.settings")
DEFERRED: dict[str, tuple[str, ...]] = {
    API_FUNCTIONS["auth"]: NOT_AUTHORIZER,
    API_FUNCTIONS["pipelines"]: NOT_AUTHORIZER,
    API_FUNCTIONS["uploads"]: NOT_AUTHORIZER,
    API_FUNCTIONS["executions"]: NOT_AUTHORIZER,
    # The docs function adds every router, Swagger UI and the OpenAPI models on its first invocation.
    API_FUNCTIONS["docs"]: (
        *NOT_AUTHORIZER,
        "functions.auth.routes",
        "functions.pipelines.routes",
        "functions.uploads.routes",
        "functions.executions.routes",
        "aws_lambda_powertools.event_handler.openapi.models",
    ),
    AUTHORIZER_MODULE: EVERYWHERE,
    # The queue consumers do not need the HTTP resolver at all.
    RESULTS_CONSUMER_MODULE: (*NOT_AUTHORIZER, "functions.http"),
    DLQ_HANDLER_MODULE: (*NOT_AUTHORIZER, "functions.http"),
    SWEEP_MODULE: (*NOT_AUTHORIZER, "functions.http"),
}
# Webhooks: the secret and log API like the others; the sender loads its store and HTTP client on first use.
DEFERRED[API_FUNCTIONS["webhooks"]] = (*NOT_AUTHORIZER, "functions.webhooks.logic", "functions.webhooks.store")
DEFERRED[WEBHOOK_SENDER_MODULE] = (*NOT_AUTHORIZER, "functions.http", "functions.webhooks.store", "http.client")


def _modules_loaded_by(module: str) -> set[str]:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_every_handler_module_is_covered() -> None:
    handlers = {*API_FUNCTIONS.values(), AUTHORIZER_MODULE, RESULTS_CONSUMER_MODULE, DLQ_HANDLER_MODULE, SWEEP_MODULE}
    handlers.add(WEBHOOK_SENDER_MODULE)
    assert set(DEFERRED) == handlers


@pytest.mark.parametrize("module", sorted(DEFERRED))
def test_a_cold_import_leaves_the_heavy_modules_for_first_use(module: str) -> None:
    loaded = _modules_loaded_by(module)
    assert module in loaded
    assert sorted(name for name in DEFERRED[module] if name in loaded) == []


@pytest.fixture
def tracing_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from shared.settings import get_settings

    monkeypatch.setenv("TRACING", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("tracing_on")
def test_the_tracer_is_built_on_the_first_invocation_and_then_reused() -> None:
    from functions.observability import capture_lambda_handler, get_tracer

    events: list[dict[str, Any]] = []

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"n": event["n"]}

    traced = capture_lambda_handler(lambda_handler)
    assert traced.__name__ == "lambda_handler"  # Logger and Tracer name the handler after it
    no_context: Any = None
    assert [traced({"n": 1}, no_context), traced({"n": 2}, no_context)] == [{"n": 1}, {"n": 2}]
    assert events == [{"n": 1}, {"n": 2}]
    assert get_tracer() is get_tracer()


def test_with_tracing_off_no_tracer_and_no_x_ray_client_is_made() -> None:
    code = """
import json, sys
from functions.observability import capture_lambda_handler
handler = capture_lambda_handler(lambda event, context: {"ok": True})
assert handler({}, None) == {"ok": True}
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {"aws_xray_sdk", "botocore.client"} & loaded


def test_every_record_and_store_shares_one_client_per_service() -> None:
    from shared import aws
    from shared.models import RECORDS, bind_models, dynamodb_connection
    from shared.settings import Settings

    settings = Settings.from_env({"STAGE": "cold-test", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    bind_models(settings)
    dynamodb = aws.client("dynamodb", settings)
    assert all(record._get_connection().connection.client is dynamodb for record in RECORDS)
    assert dynamodb_connection().client is dynamodb
    assert aws.client("s3", settings) is aws.client("s3", settings)


@pytest.fixture(scope="module")
def function_asset() -> Path:
    if runtime_python() is None:
        pytest.skip(f"no python{LAMBDA_PYTHON_VERSION} on this machine: the asset ships without bytecode")
    return function_asset_dir()


def test_the_function_asset_carries_bytecode_of_the_runtime_python_that_needs_no_source_check(
    function_asset: Path,
) -> None:
    python = runtime_python()
    assert python is not None
    magic = subprocess.run(
        [str(python), "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tag = f"cpython-{LAMBDA_PYTHON_VERSION.replace('.', '')}"
    sources = sorted(function_asset.rglob("*.py"))
    assert sources
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        header = compiled.read_bytes()[:8]
        assert header[:4].hex() == magic, compiled
        assert int.from_bytes(header[4:8], "little") == 0b01, compiled  # hash-based, source never checked
