"""The deployment's settings, read once from CDK context (cdk.json, `-c key=value`) and validated.

Every construct takes this one object; nothing else in the app reads context. Keys are camelCase as in
cdk.json; docs/ops.md has the table of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from constructs import Node

from shared import resources as res
from shared.settings import ModelSource, warm_up_size_problem

_STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_ACCOUNT_PATTERN = re.compile(r"^\d{12}$")

# The fleet's image, torch and Python are pinned in infra/gpu_fleet/versions.py (one place, checked by the tests).
WORKER_SUBNETS = ("public", "private")
DISPOSABLE_STAGES = ("dev",)  # removalPolicy not given: these are destroyed with the stack, the rest retained
PERFORMANCE_PROFILES = ("auto", "plain", "fast")  # shared.settings.WorkerSettings.performance_profile


def default_ready_timeout_s(profile: str) -> int:
    """Launch readiness wait when readyTimeoutSeconds is not set: a compiling profile (auto and fast are fast on
    the GPU fleet) compiles its warm-up shapes on an instance's first boot, so it gets 45 minutes, not 15."""
    return 900 if profile == "plain" else 2700


@dataclass(frozen=True)
class StagehubConfig:
    """One deployment (stage) of stagehub."""

    stage: str = res.DEFAULT_STAGE
    account: str | None = None  # None: the account of the credentials `cdk deploy` runs with
    region: str | None = None
    # GPU fleet
    gpu_instance_type: str = "g5.xlarge"
    min_gpu_instances: int = 0
    max_gpu_instances: int = 2
    # Scaling: the backlog target per instance is latency goal ÷ execution time unless given (docs/ops.md).
    backlog_target: int | None = None
    queue_latency_goal_s: int = 120
    execution_s: float = 10.0  # one instance's time per execution at full batches (bench: worker)
    scale_in_idle_minutes: int = 5
    ready_timeout_s: int = 900
    warm_pool: bool = False
    gpu_ami_ids: dict[str, str] = field(default_factory=dict)  # region -> pinned AMI id (infra/gpu_fleet/ami.py)
    root_device_name: str = "/dev/sda1"  # Ubuntu DLAMIs; Amazon Linux ones use /dev/xvda
    root_volume_gib: int = 200
    worker_subnets: str = "public"  # public: no NAT, no inbound rules; private: isolated with VPC endpoints
    availability_zones: tuple[str, ...] = ()
    termination_grace_s: int = 600
    # Worker behaviour
    batch_window_ms: int = 50
    max_batch_size: int = 4
    # The workers' performance profile (gpu_worker/performance.py) and the sizes its warm-up compiles.
    performance_profile: str = "auto"
    warm_up_sizes: tuple[str, ...] = ()
    models: dict[str, ModelSource] = field(default_factory=dict)
    default_models: dict[str, str] = field(default_factory=dict)
    # Queues, API, data, monitoring
    max_receive_count: int | None = None  # None: each queue's own value from shared.resources
    api_rate_limit: int = 200  # requests/s for every method without its own (infra.api.METHOD_THROTTLES)
    api_burst_limit: int = 400
    cors_allow_origins: tuple[str, ...] = ()  # empty: the web app's origin (infra/stack.py)
    retain_data: bool = True
    alarm_email: str | None = None
    oldest_message_alarm_s: int = 900
    log_retention_days: int = 30
    # Throttling (API.md "Login throttling"; docs/ops.md): the auth function's limits, and WAF's per address.
    login_failures_per_email: int = 5
    login_failure_window_s: int = 900
    login_failures_per_address: int = 30
    registrations_per_address: int = 10
    web_acl: bool = True
    waf_rate_limit: int = 3000  # requests per client address per 5 minutes, whole API
    waf_auth_rate_limit: int = 300  # requests per client address per 5 minutes on /auth/*
    # "METHOD /path" -> {"rate": requests/s, "burst": requests}, over the defaults of infra.api.METHOD_THROTTLES
    method_throttles: dict[str, dict[str, int]] = field(default_factory=dict)

    # Fair share and quotas per user (API.md "Per-user fairness"; docs/ops.md "Fair share and quotas")
    max_active_executions: int = 4
    max_queued_executions: int = 100
    daily_gpu_seconds: float | None = None
    # Build
    skip_layer_build: bool = False  # tests: an empty dependency layer instead of running pip

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid stagehub context: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        found = []
        if not _STAGE_PATTERN.match(self.stage):
            found.append(f"stage {self.stage!r} must be lower-case letters, digits and '-', at most 16")
        if self.account is not None and not _ACCOUNT_PATTERN.match(self.account):
            found.append(f"account {self.account!r} must be 12 digits")
        if not 0 <= self.min_gpu_instances <= self.max_gpu_instances:
            found.append("need 0 <= minGpuInstances <= maxGpuInstances")
        if self.max_gpu_instances < 1:
            found.append("maxGpuInstances must be at least 1 (the fleet scales from zero to it)")
        if self.backlog_target is not None and self.backlog_target < 1:
            found.append("backlogTargetPerInstance must be at least 1")
        if self.queue_latency_goal_s < 1 or self.execution_s <= 0:
            found.append("queueLatencyGoalSeconds and executionSeconds must be positive")
        if not 1 <= self.scale_in_idle_minutes <= 60:
            found.append("scaleInIdleMinutes must be within 1..60")
        if self.performance_profile not in PERFORMANCE_PROFILES:
            found.append(f"gpuPerformanceProfile must be one of {PERFORMANCE_PROFILES}")
        found += [problem for size in self.warm_up_sizes if (problem := warm_up_size_problem(size)) is not None]
        if not 60 <= self.ready_timeout_s <= 7000:
            found.append("readyTimeoutSeconds must be within 60..7000 (a lifecycle hook waits at most 7200 s)")
        if self.worker_subnets not in WORKER_SUBNETS:
            found.append(f"workerSubnets must be one of {WORKER_SUBNETS}")
        bad_amis = [ami for ami in self.gpu_ami_ids.values() if not re.match(r"^ami-[0-9a-f]{8,17}$", ami)]
        if bad_amis:
            found.append(f"gpuAmiIds holds values that are not AMI ids: {bad_amis}")
        if self.max_receive_count is not None and not 1 <= self.max_receive_count <= 1000:
            found.append("maxReceiveCount must be within 1..1000")
        if min(self.login_failures_per_email, self.login_failures_per_address, self.registrations_per_address) < 1:
            found.append("loginFailuresPerEmail, loginFailuresPerAddress and registrationsPerAddress must be >= 1")
        if not 60 <= self.login_failure_window_s <= 86400:
            found.append("loginFailureWindowSeconds must be within 60..86400")
        if min(self.waf_auth_rate_limit, self.waf_rate_limit) < 10:
            found.append("wafRateLimit and wafAuthRateLimit must be at least 10 (WAF's minimum)")

        if not 1 <= self.max_active_executions <= self.max_queued_executions:
            found.append("need 1 <= maxActiveExecutions <= maxQueuedExecutions")
        if self.daily_gpu_seconds is not None and self.daily_gpu_seconds <= 0:
            found.append("dailyGpuSeconds must be positive (or not set: no daily quota)")
        unknown = set(self.default_models.values()) - set(self.models)
        if unknown:
            found.append(f"defaultModels name models that are not in models: {sorted(unknown)}")
        return found

    @property
    def backlog_target_per_instance(self) -> int:
        """Backlog (visible + in flight) per in-service instance that keeps the queue wait near the goal: an
        instance finishes one execution every `execution_s`, so B waiting ones wait about B * execution_s."""
        if self.backlog_target is not None:
            return self.backlog_target
        return max(1, int(self.queue_latency_goal_s // self.execution_s))

    @property
    def removal_policy_name(self) -> str:
        return "retain" if self.retain_data else "destroy"

    @property
    def is_production_like(self) -> bool:
        """Everything but a dev stage keeps deletion protection on its tables."""
        return self.retain_data

    def models_json(self) -> str:
        return json.dumps({name: src.model_dump() for name, src in sorted(self.models.items())}, sort_keys=True)

    def default_models_json(self) -> str:
        return json.dumps(dict(sorted(self.default_models.items())))

    def admission_environment(self) -> dict[str, str]:
        """The fair-share settings as the functions' environment variables (shared.settings.Settings)."""
        env = {
            "MAX_ACTIVE_EXECUTIONS": str(self.max_active_executions),
            "MAX_QUEUED_EXECUTIONS": str(self.max_queued_executions),
        }
        if self.daily_gpu_seconds is not None:
            env["DAILY_GPU_SECONDS"] = str(self.daily_gpu_seconds)
        return env

    def max_receive_count_for(self, spec: res.QueueSpec) -> int:
        return self.max_receive_count or spec.max_receive_count

    @classmethod
    def from_context(cls, node: Node) -> StagehubConfig:
        """Read every key from the construct tree's context (cdk.json plus `-c` overrides)."""

        def get(key: str, default: Any = None) -> Any:
            value = node.try_get_context(key)
            return default if value is None or value == "" else value

        defaults = cls.__dataclass_fields__
        models = _json_value(get("models", {}))
        profile = str(get("gpuPerformanceProfile", "auto"))
        return cls(
            stage=str(get("stage", res.DEFAULT_STAGE)),
            account=_optional_str(get("account")),
            region=_optional_str(get("region")),
            gpu_instance_type=str(get("gpuInstanceType", defaults["gpu_instance_type"].default)),
            min_gpu_instances=int(get("minGpuInstances", 0)),
            max_gpu_instances=int(get("maxGpuInstances", defaults["max_gpu_instances"].default)),
            backlog_target=_optional_int(get("backlogTargetPerInstance")),
            queue_latency_goal_s=int(get("queueLatencyGoalSeconds", 120)),
            execution_s=float(get("executionSeconds", 10.0)),
            scale_in_idle_minutes=int(get("scaleInIdleMinutes", 5)),
            ready_timeout_s=_optional_int(get("readyTimeoutSeconds")) or default_ready_timeout_s(profile),
            warm_pool=_bool(get("warmPool", False)),
            gpu_ami_ids=dict(_json_value(get("gpuAmiIds", {}))),
            root_device_name=str(get("rootDeviceName", "/dev/sda1")),
            root_volume_gib=int(get("rootVolumeGiB", 200)),
            worker_subnets=str(get("workerSubnets", "public")),
            availability_zones=tuple(_json_value(get("availabilityZones", []))),
            termination_grace_s=int(get("terminationGraceSeconds", 600)),
            batch_window_ms=int(get("batchWindowMs", 50)),
            max_batch_size=int(get("maxBatchSize", 4)),
            performance_profile=profile,
            warm_up_sizes=tuple(_json_value(get("gpuWarmUpSizes", []))),
            models={name: ModelSource(**spec) for name, spec in models.items()},
            default_models=dict(_json_value(get("defaultModels", {}))),
            max_receive_count=_optional_int(get("maxReceiveCount")),
            api_rate_limit=int(get("apiRateLimit", 200)),
            api_burst_limit=int(get("apiBurstLimit", 400)),
            cors_allow_origins=tuple(_json_value(get("corsAllowOrigins", []))),
            retain_data=_retain(get("removalPolicy"), str(get("stage", res.DEFAULT_STAGE))),
            alarm_email=_optional_str(get("alarmEmail")),
            oldest_message_alarm_s=int(get("oldestMessageAlarmSeconds", 900)),
            log_retention_days=int(get("logRetentionDays", 30)),
            login_failures_per_email=int(get("loginFailuresPerEmail", 5)),
            login_failure_window_s=int(get("loginFailureWindowSeconds", 900)),
            login_failures_per_address=int(get("loginFailuresPerAddress", 30)),
            registrations_per_address=int(get("registrationsPerAddress", 10)),
            web_acl=_bool(get("webAcl", True)),
            waf_rate_limit=int(get("wafRateLimit", 3000)),
            waf_auth_rate_limit=int(get("wafAuthRateLimit", 300)),
            method_throttles=dict(_json_value(get("apiMethodThrottles", {}))),
            skip_layer_build=_bool(get("skipLayerBuild", False)),
            max_active_executions=int(get("maxActiveExecutions", 4)),
            max_queued_executions=int(get("maxQueuedExecutions", 100)),
            daily_gpu_seconds=_optional_float(get("dailyGpuSeconds")),
        )


def _retain(removal_policy: Any, stage: str) -> bool:
    """`removalPolicy` when given (retain or destroy); otherwise destroy for a disposable stage (dev), else retain."""
    if removal_policy is None:
        return stage not in DISPOSABLE_STAGES
    return str(removal_policy).lower() == "retain"


def _json_value(value: Any) -> Any:
    """Context from `-c key=value` arrives as a string; from cdk.json as JSON already."""
    return json.loads(value) if isinstance(value, str) else value


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in {"1", "true", "yes", "on"}


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
