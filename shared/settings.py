"""Settings read from environment variables (pydantic-settings), once per process, and validated.

Two sets, apart: `Settings` (`get_settings()`) is the API's, read by the Lambda functions; `WorkerSettings`
(`get_worker_settings()`) is the GPU worker's. Both extend `CommonSettings`: the stage, region and endpoint,
the tables, buckets and models both sides use. `StackSettings` is both at once, for the processes that run
both sides (the local stack's, the tests', the benchmarks'). The CDK app sets the variables on every Lambda
function and on the worker's systemd unit; the local stack sets them for its processes. Nothing else in the
code reads the environment.

A field's variable is its name in upper case (`max_batch_size` <- MAX_BATCH_SIZE); dict fields take JSON;
empty variables count as unset. Resource names default to the stage's (`shared.resources`), as the CDK app
names them; values without a sensible default (the worker's queues) are required.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared import resources as res

_MiB = 1024 * 1024
_environment: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environment", default=None)


class ModelSource(BaseModel):
    """Where a model's weights come from: a local directory, an S3 prefix, or a hub id (needs internet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(pattern="^(diffusers|causal-lm)$")
    source: str  # "/abs/dir", "s3://bucket/prefix/", or "org/name"


class _Environment(EnvSettingsSource):
    """The process's environment, or the mapping `from_env` was given (so tests can pass one explicitly)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _environment.get()
        if given is None:
            return super()._load_env_vars()
        return {name.lower(): value for name, value in given.items() if value != ""}


class CommonSettings(BaseSettings):
    """What the API's functions and the worker both read."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True, populate_by_name=True)

    stage: str = res.DEFAULT_STAGE
    region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "region")
    )
    aws_endpoint_url: str | None = None  # set only against moto (local stack, tests)

    # Resource names: the stage's (shared.resources) unless set (the CDK app always sets them).
    users_table: str
    refresh_tokens_table: str
    pipelines_table: str
    ratings_table: str
    executions_table: str
    idempotency_table: str

    pipelines_bucket: str
    uploads_bucket: str
    results_bucket: str

    # Models: name -> source, and the default model of each stage type.
    models: dict[str, ModelSource] = Field(default_factory=dict)
    default_models: dict[str, str] = Field(default_factory=dict)
    metrics_namespace: str = "Stagehub"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment; no .env files or secret directories."""
        return init_settings, _Environment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _stage_resource_names(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        names = res.ResourceNames(stage=str(values.get("stage") or res.DEFAULT_STAGE))
        for spec in res.TABLES:
            values.setdefault(spec.env_var.lower(), names.table(spec))
        for bucket in res.BUCKETS:
            values.setdefault(bucket.env_var.lower(), names.bucket(bucket))
        return values

    @field_validator("models", "default_models", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        """JSON text given as an argument (the environment's is parsed before this)."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Settings from `environ` (default: the process's environment); RuntimeError says what is invalid."""
        with _reading(environ):
            try:
                return cls()  # type: ignore[call-arg]  # the environment and the stage fill in the resource names
            except ValidationError as exc:
                raise RuntimeError(f"invalid settings from environment: {exc}") from exc


@contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _environment.set(environ)
    try:
        yield
    finally:
        _environment.reset(token)


class Settings(CommonSettings):
    """The API's settings: the Lambda functions (HTTP and queue consumers) read these."""

    backend_queues: dict[str, str] = Field(default_factory=dict)  # backend -> in-queue URL
    backend_dlqs: dict[str, str] = Field(default_factory=dict)  # backend -> in-queue DLQ URL
    # The out-queue and its DLQ: polled by the local stack's consumers (in AWS, event source mappings do that).
    out_queue_url: str | None = None
    out_dlq_url: str | None = None

    # Auth. In AWS the secret comes from Secrets Manager (jwt_secret_arn); locally it is generated.
    jwt_secret: str | None = None
    jwt_secret_arn: str | None = None
    jwt_issuer: str = "stagehub"
    jwt_audience: str = "stagehub-api"
    access_token_ttl_s: int = Field(default=900, ge=60, le=86400)
    refresh_token_ttl_s: int = Field(default=30 * 86400, ge=3600)

    # Limits and lifetimes.
    presign_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    upload_max_bytes: int = 10 * _MiB
    idempotency_ttl_s: int = 24 * 3600
    execution_deadline_s: int = Field(default=3600, ge=60)

    tracing: bool = False  # X-Ray tracing of the functions: the CDK app turns it on (TRACING=true) with active tracing

    # --- New API fields go here (plain fields with a default and a comment). ---

    @field_validator("backend_queues", "backend_dlqs", mode="before")
    @classmethod
    def _parse_queue_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.backend_queues)


class WorkerSettings(CommonSettings):
    """The GPU worker's settings (gpu_worker/): its queues are required."""

    in_queue_url: str = Field(min_length=1)  # the worker's own in-queue
    out_queue_url: str = Field(min_length=1)

    model_cache_dir: str = "/var/cache/stagehub/models"
    device: str = "auto"  # auto | cpu | cuda
    batch_window_ms: int = Field(default=50, ge=0, le=5000)
    max_batch_size: int = Field(default=4, ge=1, le=64)
    torch_compile: bool = False
    poll_wait_s: int = Field(default=20, ge=0, le=20)
    progress_interval_s: float = Field(default=1.0, ge=0)  # per execution: each event is a send and a write
    # Set on EC2 by the launch template's user data: the worker protects its instance from scale-in while busy.
    asg_name: str = ""
    lifecycle_hook_name: str = ""

    # --- New worker fields go here (plain fields with a default and a comment). ---


class StackSettings(WorkerSettings, Settings):
    """Both sides' settings at once, for processes that run both: the local stack, the tests, the benchmarks."""

    out_queue_url: str = Field(min_length=1)  # the worker's requirement wins


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The API's settings, read on first use (not at import, so tests can set the environment first)."""
    return Settings.from_env()


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The worker's settings, read on first use."""
    return WorkerSettings.from_env()


def clear_cached_settings() -> None:
    """Forget both cached settings (tests and the local gateway's instances, after the environment changed)."""
    get_settings.cache_clear()
    get_worker_settings.cache_clear()


__all__ = [
    "CommonSettings",
    "ModelSource",
    "Settings",
    "StackSettings",
    "WorkerSettings",
    "clear_cached_settings",
    "get_settings",
    "get_worker_settings",
]
