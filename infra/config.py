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
from shared.settings import ModelSource

_STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_ACCOUNT_PATTERN = re.compile(r"^\d{12}$")

# The Deep Learning AMI with NVIDIA drivers and PyTorch, as AWS publishes it in SSM (resolved at deploy time).
DEFAULT_DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"
)


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
    backlog_target_per_instance: int = 4
    warm_pool: bool = False
    dlami_parameter: str = DEFAULT_DLAMI_PARAMETER
    root_device_name: str = "/dev/sda1"  # Ubuntu DLAMIs; Amazon Linux ones use /dev/xvda
    root_volume_gib: int = 200
    nat_gateways: int = 1
    availability_zones: tuple[str, ...] = ()
    termination_grace_s: int = 600
    # Worker behaviour
    batch_window_ms: int = 50
    max_batch_size: int = 4
    torch_compile: bool = False
    models: dict[str, ModelSource] = field(default_factory=dict)
    default_models: dict[str, str] = field(default_factory=dict)
    # Queues, API, data, monitoring
    max_receive_count: int | None = None  # None: each queue's own value from shared.resources
    api_rate_limit: int = 50
    api_burst_limit: int = 100
    cors_allow_origins: tuple[str, ...] = ()  # empty: the web app's origin (infra/stack.py)
    retain_data: bool = True
    alarm_email: str | None = None
    oldest_message_alarm_s: int = 900
    log_retention_days: int = 30
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
        if self.backlog_target_per_instance < 1:
            found.append("backlogTargetPerInstance must be at least 1")
        if self.nat_gateways < 1:
            found.append(
                "natGateways must be at least 1: the workers reach SQS, CloudWatch, Auto Scaling and PyPI through "
                "NAT (only S3 and DynamoDB have VPC endpoints)"
            )
        if self.max_receive_count is not None and not 1 <= self.max_receive_count <= 1000:
            found.append("maxReceiveCount must be within 1..1000")
        unknown = set(self.default_models.values()) - set(self.models)
        if unknown:
            found.append(f"defaultModels name models that are not in models: {sorted(unknown)}")
        return found

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
        return cls(
            stage=str(get("stage", res.DEFAULT_STAGE)),
            account=_optional_str(get("account")),
            region=_optional_str(get("region")),
            gpu_instance_type=str(get("gpuInstanceType", defaults["gpu_instance_type"].default)),
            min_gpu_instances=int(get("minGpuInstances", 0)),
            max_gpu_instances=int(get("maxGpuInstances", defaults["max_gpu_instances"].default)),
            backlog_target_per_instance=int(get("backlogTargetPerInstance", 4)),
            warm_pool=_bool(get("warmPool", False)),
            dlami_parameter=str(get("dlamiSsmParameter", DEFAULT_DLAMI_PARAMETER)),
            root_device_name=str(get("rootDeviceName", "/dev/sda1")),
            root_volume_gib=int(get("rootVolumeGiB", 200)),
            nat_gateways=int(get("natGateways", 1)),
            availability_zones=tuple(_json_value(get("availabilityZones", []))),
            termination_grace_s=int(get("terminationGraceSeconds", 600)),
            batch_window_ms=int(get("batchWindowMs", 50)),
            max_batch_size=int(get("maxBatchSize", 4)),
            torch_compile=_bool(get("torchCompile", False)),
            models={name: ModelSource(**spec) for name, spec in models.items()},
            default_models=dict(_json_value(get("defaultModels", {}))),
            max_receive_count=_optional_int(get("maxReceiveCount")),
            api_rate_limit=int(get("apiRateLimit", 50)),
            api_burst_limit=int(get("apiBurstLimit", 100)),
            cors_allow_origins=tuple(_json_value(get("corsAllowOrigins", []))),
            retain_data=str(get("removalPolicy", "retain")).lower() == "retain",
            alarm_email=_optional_str(get("alarmEmail")),
            oldest_message_alarm_s=int(get("oldestMessageAlarmSeconds", 900)),
            log_retention_days=int(get("logRetentionDays", 30)),
            skip_layer_build=_bool(get("skipLayerBuild", False)),
        )


def _json_value(value: Any) -> Any:
    """Context from `-c key=value` arrives as a string; from cdk.json as JSON already."""
    return json.loads(value) if isinstance(value, str) else value


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in {"1", "true", "yes", "on"}


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
