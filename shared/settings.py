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
from typing import Any, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared import resources as res
from shared.families import DEFAULT_FAMILY_OF_KIND, family_named
from shared.stages import check_model_defaults

_MiB = 1024 * 1024
_environment: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environment", default=None)


def _from_json_text(value: Any, empty: Any) -> Any:
    """A JSON setting given as text (an argument, or the environment's where pydantic-settings left it a string);
    blank text is `empty`."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else empty
    return value


class ModelSource(BaseModel):
    """Where a model's weights come from: a local directory, an S3 prefix, or a hub id (needs internet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(pattern="^(diffusers|causal-lm)$")
    source: str  # "/abs/dir", "s3://bucket/prefix/", or "org/name"
    # Model family (shared.families): decides pipeline classes and supported parameters; default per kind
    # (diffusers: sd15, causal-lm: causal-lm). The worker checks it against the weights' model_index.json.
    family: str = ""
    # LoRA adapters usable with this model: name -> source (local .safetensors file or directory, or s3:// URI)
    loras: dict[str, str] = Field(default_factory=dict)
    # causal-lm only: an instruct model whose tokenizer has a chat template (enables the `system` parameter)
    chat: bool = False
    # Stage parameter defaults for this model (camelCase), used where a stage does not set them: e.g. SDXL's
    # 1024x1024 or FLUX.1-dev's guidanceScale 3.5 instead of the stage types' SD 1.5-shaped defaults.
    defaults: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_family_and_defaults(self) -> ModelSource:
        if not self.family:
            object.__setattr__(self, "family", DEFAULT_FAMILY_OF_KIND[self.kind])
        if family_named(self.family).kind != self.kind:
            raise ValueError(f"family {self.family!r} is not a {self.kind} family")
        check_model_defaults(self.family, self.defaults)
        return self


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
    sessions_table: str  # auth's session families
    throttles_table: str  # auth's login and registration counters
    admission_table: str  # fair share: per-user admitted executions and daily usage
    webhooks_table: str  # webhook secrets, per-execution delivery state and the delivery log

    pipelines_bucket: str
    uploads_bucket: str
    results_bucket: str

    # Models: name -> source, and the default model of each stage type.
    models: dict[str, ModelSource] = Field(default_factory=dict)
    default_models: dict[str, str] = Field(default_factory=dict)
    metrics_namespace: str = "Stagehub"
    # A worker's largest batch: the worker batches up to it, GET /backends estimates the fleet's workers with it.
    max_batch_size: int = Field(default=4, ge=1, le=64)

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
        return _from_json_text(value, {})

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
    # Login and registration throttling (API.md "Login throttling"; cdk.json context, see docs/ops.md).
    session_lifetime_s: int = Field(default=30 * 86400, ge=3600)  # a token family ends this long after its login
    login_failures_per_email: int = Field(default=5, ge=1)  # failed logins of one email within the window
    login_failure_window_s: int = Field(default=900, ge=60)
    login_failures_per_address: int = Field(default=30, ge=1)  # failed logins from one client address a minute
    registrations_per_address: int = Field(default=10, ge=1)  # registrations from one client address a minute

    # Limits and lifetimes.
    presign_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    upload_max_bytes: int = 10 * _MiB
    idempotency_ttl_s: int = 24 * 3600
    execution_deadline_s: int = Field(default=3600, ge=60)
    # Fair share and quotas per user (API.md "Limits, fairness and hostile input"; docs/ops.md).
    max_active_executions: int = Field(default=4, ge=1, le=100)  # admitted to a queue or running
    max_queued_executions: int = Field(default=100, ge=1, le=10000)  # non-final, admitted or waiting
    daily_gpu_seconds: float | None = Field(default=None, gt=0)  # None: no daily quota
    # The results consumer writes an execution's progress at most this often (each write is a write unit).
    progress_write_interval_s: float = Field(default=2.0, ge=0)
    execution_record_ttl_days: int = Field(default=31, ge=1)  # the results bucket keeps outputs 30 days

    # Webhooks (API.md, "Events: wait, webhooks, backends").
    webhook_queue_url: str = ""  # events waiting for delivery (and their retries)
    webhook_dlq_url: str = ""  # events whose retries are exhausted
    # The local stack's receivers listen on loopback over plain HTTP; never set in AWS.
    webhook_allow_loopback_http: bool = False
    # Delays before the 2nd, 3rd, ... attempt of one event (seconds; at least 24 h in all, as API.md promises).
    webhook_retry_delays_s: list[NonNegativeInt] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000], min_length=1
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=30)  # one delivery attempt, connect to answer
    webhook_progress_interval_s: float = Field(default=5.0, ge=0)  # at most one progress event per execution per N s
    # Web app: the origins whose browsers may call the API (CORS); JSON list in CORS_ALLOW_ORIGINS, "*" = any.
    cors_allow_origins: list[str] = Field(default_factory=lambda: ["*"])

    tracing: bool = False  # X-Ray tracing of the functions: the CDK app turns it on (TRACING=true) with active tracing

    # --- New API fields go here (plain fields with a default and a comment). ---

    @field_validator("backend_queues", "backend_dlqs", mode="before")
    @classmethod
    def _parse_queue_json(cls, value: Any) -> Any:
        return _from_json_text(value, {})

    @field_validator("webhook_retry_delays_s", mode="before")
    @classmethod
    def _parse_delays(cls, value: Any) -> Any:
        return _from_json_text(value, [])

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        return _from_json_text(value, ["*"])

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
    # How the models run (gpu_worker/performance.py): auto = fast on CUDA (bf16, fused QKV, torch.compile with
    # CUDA graphs), plain on a CPU.
    performance_profile: Literal["auto", "plain", "fast"] = "auto"
    # "WIDTHxHEIGHT" sizes the fast profile compiles at warm-up, each for 1..max_batch_size images (JSON list);
    # empty: the default txt2img model's default size.
    warm_up_sizes: list[str] = Field(default_factory=list)
    compile_cache_dir: str = "/var/cache/stagehub/torch-compile"  # on the instance's disk: survives restarts
    poll_wait_s: int = Field(default=20, ge=0, le=20)
    progress_interval_s: float = Field(default=1.0, ge=0)  # per execution: each event is a send and a write
    # Set on EC2 by the launch template's user data: the worker protects its instance from scale-in while busy.
    asg_name: str = ""
    lifecycle_hook_name: str = ""
    # Worker robustness (gpu_worker.watchdog): the process gives back its messages and exits when its compute
    # loop makes no progress for this multiple of its expected step time (at least the minimum; while a model
    # loads, the load allowance); it receives more only when the running batch ends within the horizon.
    watchdog_stall_multiple: float = Field(default=20.0, ge=2)
    watchdog_min_stall_s: float = Field(default=120.0, ge=1)
    watchdog_load_s: float = Field(default=900.0, ge=1)
    prefetch_horizon_s: float = Field(default=2.0, ge=0)
    # After SIGTERM, running batches may finish for this long before they stop at their next step and hand their
    # messages back (finished stages are kept). 0 (issue 11: a stop takes effect within one step); at most 25 s,
    # under systemd's TimeoutStopSec and the lifecycle hook's heartbeat.
    stop_grace_s: float = Field(default=0.0, ge=0, le=25)
    # Fleet readiness (gpu_worker/readiness.py): the launch hook answered once every worker process is ready.
    launch_hook_name: str = ""  # the group's launch lifecycle hook
    ready_timeout_s: int = Field(default=900, ge=60)  # not ready by then: the launch hook is abandoned
    state_dir: str = "/run/stagehub"  # the supervisor's busy/ready files (systemd RuntimeDirectory)

    # --- New worker fields go here (plain fields with a default and a comment). ---

    @field_validator("warm_up_sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: Any) -> Any:
        return _from_json_text(value, [])

    @field_validator("warm_up_sizes")
    @classmethod
    def _check_sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            if (problem := warm_up_size_problem(size)) is not None:
                raise ValueError(problem)
        return sizes

    def warm_up_size_pairs(self) -> list[tuple[int, int]]:
        """WARM_UP_SIZES as (width, height) pairs (validated)."""
        return [pair for pair in map(_size_pair, self.warm_up_sizes) if pair is not None]


def _size_pair(size: str) -> tuple[int, int] | None:
    width, separator, height = size.partition("x")
    if not (separator and width.isdigit() and height.isdigit()):
        return None
    return int(width), int(height)


def warm_up_size_problem(size: str) -> str | None:
    """Why `size` is not a warm-up size ("WIDTHxHEIGHT", each a multiple of 8 in 64..2048); None if it is."""
    parsed = _size_pair(size)
    if parsed is None or not all(64 <= side <= 2048 and side % 8 == 0 for side in parsed):
        return f"warm-up size {size!r} is not WIDTHxHEIGHT, each a multiple of 8 in 64..2048"
    return None


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
    "warm_up_size_problem",
]
