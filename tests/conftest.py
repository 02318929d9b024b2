"""Fixtures shared by every test: a moto server with the stack's resources, and the settings that point at it.

One moto server serves the whole session (tests use fresh ids, so they do not collide); `stack_env` puts
its environment into os.environ, clears the cached settings and binds the pynamodb records.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.moto import MotoServer
from local.provision import provision
from shared.models import bind_models
from shared.settings import StackSettings, clear_cached_settings


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def stack_environment(moto_server: MotoServer) -> dict[str, str]:
    """The environment variables of the provisioned local resources (the same ones the CDK app sets)."""
    return provision(moto_server.endpoint_url) | SESSION_ADDRESS_LIMITS


# Every test client but the throttling tests' connects from 127.0.0.1, so the per-address limits are raised for
# the session; tests/integration/test_auth_throttling.py sets API.md's figures back for its own clients.
SESSION_ADDRESS_LIMITS = {"LOGIN_FAILURES_PER_ADDRESS": "1000000", "REGISTRATIONS_PER_ADDRESS": "1000000"}


@pytest.fixture
def stack_env(stack_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[StackSettings]:
    """Point this process at the moto stack: environment, settings and pynamodb records."""
    for name, value in stack_environment.items():
        monkeypatch.setenv(name, value)
    clear_cached_settings()
    settings = StackSettings.from_env()
    bind_models(settings)
    yield settings
    clear_cached_settings()


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach a real AWS account from a test, whatever the developer's shell has."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny offline models (`make models` builds them into STAGEHUB_MODELS_DIR; else built here once)."""
    from gpu_worker.tiny_models import ensure_tiny_models

    configured = os.environ.get("STAGEHUB_MODELS_DIR")
    return ensure_tiny_models(Path(configured) if configured else tmp_path_factory.mktemp("models"))
