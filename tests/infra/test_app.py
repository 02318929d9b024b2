"""The app as a whole: synthesizes fast enough (cdk-nag: test_nag.py); context is validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import StagehubConfig
from infra.packaging import FUNCTION_PACKAGES, stage_packages
from tests.infra.conftest import Synthesized


def test_synth_is_fast(synthesized: Synthesized) -> None:
    assert synthesized.seconds < 60


def test_function_asset_holds_only_functions_and_shared() -> None:
    root = Path(stage_packages(FUNCTION_PACKAGES, "test-functions-"))
    assert {p.name for p in root.iterdir()} == {"functions", "shared"}
    assert (root / "functions" / "routes.py").exists()
    assert not list(root.rglob("__pycache__"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_gpu_instances": 3, "max_gpu_instances": 2}, "minGpuInstances"),
        ({"max_gpu_instances": 0}, "maxGpuInstances"),
        ({"stage": "Prod_1"}, "stage"),
        ({"account": "12345"}, "account"),
        ({"default_models": {"txt2img": "missing"}}, "defaultModels"),
        ({"max_receive_count": 0}, "maxReceiveCount"),
        ({"worker_subnets": "nat"}, "workerSubnets"),
        ({"backlog_target": 0}, "backlogTargetPerInstance"),
        ({"scale_in_idle_minutes": 0}, "scaleInIdleMinutes"),
        ({"ready_timeout_s": 8000}, "readyTimeoutSeconds"),
        ({"performance_profile": "turbo"}, "gpuPerformanceProfile"),
        ({"warm_up_sizes": ("1024",)}, "warm-up size"),
        ({"gpu_ami_ids": {"eu-west-1": "latest"}}, "gpuAmiIds"),
    ],
)
def test_invalid_context_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StagehubConfig(**changes)


def test_context_strings_from_the_command_line_are_parsed() -> None:
    class FakeNode:
        values = {
            "stage": "qa",
            "warmPool": "true",
            "maxGpuInstances": "5",
            "models": '{"m": {"kind": "diffusers", "source": "s3://b/m/"}}',
            "defaultModels": '{"txt2img": "m"}',
            "alarmEmail": "",
        }

        def try_get_context(self, key: str) -> object:
            return self.values.get(key)

    config = StagehubConfig.from_context(FakeNode())  # type: ignore[arg-type]
    assert (config.stage, config.warm_pool, config.max_gpu_instances) == ("qa", True, 5)
    assert config.models["m"].source == "s3://b/m/"
    assert config.alarm_email is None
    assert config.min_gpu_instances == 0


@pytest.mark.parametrize(
    ("values", "retained"),
    [
        ({"stage": "dev"}, False),  # dev is disposable: destroy-then-deploy works
        ({"stage": "prod"}, True),
        ({"stage": "qa"}, True),  # anything but dev keeps its data unless told otherwise
        ({"stage": "dev", "removalPolicy": "retain"}, True),
        ({"stage": "prod", "removalPolicy": "destroy"}, False),
    ],
)
def test_removal_policy_follows_the_stage_unless_given(values: dict[str, str], retained: bool) -> None:
    class FakeNode:
        def try_get_context(self, key: str) -> object:
            return values.get(key)

    assert StagehubConfig.from_context(FakeNode()).retain_data is retained  # type: ignore[arg-type]


def test_backlog_target_comes_from_the_latency_goal() -> None:
    assert StagehubConfig(queue_latency_goal_s=120, execution_s=10).backlog_target_per_instance == 12
    assert StagehubConfig(queue_latency_goal_s=5, execution_s=10).backlog_target_per_instance == 1
    assert StagehubConfig(backlog_target=3).backlog_target_per_instance == 3
