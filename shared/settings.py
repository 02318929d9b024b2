"""One settings object, read from environment variables once and validated.

The CDK app sets these variables on every Lambda function and on the GPU worker's systemd unit; the local
stack sets them for its processes. Nothing else in the code reads the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator, model_validator

from shared import resources as res
from shared.families import DEFAULT_FAMILY_OF_KIND, family_named
from shared.stages import check_model_defaults

_MiB = 1024 * 1024


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


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str = res.DEFAULT_STAGE
    region: str = "us-east-1"
    aws_endpoint_url: str | None = None  # set only against moto (local stack, tests)

    users_table: str
    refresh_tokens_table: str
    pipelines_table: str
    ratings_table: str
    executions_table: str
    idempotency_table: str

    pipelines_bucket: str
    uploads_bucket: str
    results_bucket: str

    backend_queues: dict[str, str] = Field(default_factory=dict)  # backend -> in-queue URL
    backend_dlqs: dict[str, str] = Field(default_factory=dict)  # backend -> in-queue DLQ URL
    in_queue_url: str = ""  # the worker's own in-queue
    out_queue_url: str = ""
    out_dlq_url: str = ""

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

    # Models: name -> source, and the default model of each stage type.
    models: dict[str, ModelSource] = Field(default_factory=dict)
    default_models: dict[str, str] = Field(default_factory=dict)

    # Worker.
    model_cache_dir: str = "/var/cache/stagehub/models"
    device: str = "auto"  # auto | cpu | cuda
    batch_window_ms: int = Field(default=50, ge=0, le=5000)
    max_batch_size: int = Field(default=4, ge=1, le=64)
    torch_compile: bool = False
    poll_wait_s: int = Field(default=20, ge=0, le=20)
    progress_interval_s: float = Field(default=1.0, ge=0)  # per execution: each event is a send and a write
    metrics_namespace: str = "Stagehub"
    # Set on EC2 by the launch template's user data: the worker protects its instance from scale-in while busy.
    asg_name: str = ""
    lifecycle_hook_name: str = ""

    # Webhooks (API.md, "Events: wait, webhooks, backends").
    webhooks_table: str = ""  # set from shared.resources.WEBHOOKS like the other tables
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

    @field_validator("backend_queues", "backend_dlqs", "models", "default_models", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("webhook_retry_delays_s", mode="before")
    @classmethod
    def _parse_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.backend_queues)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; resource names default to the stage's names."""
        env = os.environ if environ is None else environ
        stage = env.get("STAGE", res.DEFAULT_STAGE)
        names = res.ResourceNames(stage=stage)
        values: dict[str, Any] = {"stage": stage}
        for spec in res.TABLES:
            values[_field_of(spec.env_var)] = env.get(spec.env_var, names.table(spec))
        for bucket in res.BUCKETS:
            values[_field_of(bucket.env_var)] = env.get(bucket.env_var, names.bucket(bucket))
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
        for name in cls.model_fields:
            var = name.upper()
            if name not in values and var in env:
                values[name] = env[var]
        try:
            return cls(**values)
        except ValidationError as exc:
            raise RuntimeError(f"invalid settings from environment: {exc}") from exc


def _field_of(env_var: str) -> str:
    return env_var.lower()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use (not at import, so tests can set the environment first)."""
    return Settings.from_env()
