"""The GPU fleet: launch template hardening, worker delivery, instance permissions, scaling from and to zero."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from infra.gpu_fleet import FILES_DIR, worker_files, worker_requirements
from infra.packaging import WORKER_PACKAGES, stage_packages
from shared import resources as res
from shared import telemetry
from tests.infra.conftest import Synthesized


def _fleet(synthesized: Synthesized) -> Any:
    (fleet,) = synthesized.stack.fleets
    return fleet


def _launch_data(synthesized: Synthesized) -> dict[str, Any]:
    (template,) = synthesized.of_type("AWS::EC2::LaunchTemplate").values()
    return template["Properties"]["LaunchTemplateData"]


def _user_data(synthesized: Synthesized) -> str:
    parts = _launch_data(synthesized)["UserData"]["Fn::Base64"]["Fn::Join"][1]
    return "".join(part if isinstance(part, str) else json.dumps(part) for part in parts)


def test_launch_template_is_hardened(synthesized: Synthesized) -> None:
    data = _launch_data(synthesized)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert "KeyName" not in data
    (volume,) = data["BlockDeviceMappings"]
    assert volume["Ebs"]["Encrypted"] is True
    assert volume["Ebs"]["VolumeType"] == "gp3"
    assert volume["Ebs"]["VolumeSize"] >= 100
    assert data["InstanceType"].startswith(("g5.", "g6."))
    # The AMI is an SSM parameter resolved at deploy time: no lookup at synth.
    image_parameter = data["ImageId"]["Ref"]
    parameter = synthesized.template.to_json()["Parameters"][image_parameter]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert parameter["Default"].startswith("/aws/service/deeplearning/ami/")


def test_security_group_has_no_ingress(synthesized: Synthesized) -> None:
    for group in synthesized.of_type("AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in group["Properties"]
    synthesized.template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


def test_user_data_installs_and_starts_the_worker_with_its_settings(synthesized: Synthesized) -> None:
    script = _user_data(synthesized)
    fleet = _fleet(synthesized)
    assert "aws s3 cp" in script
    assert "install.sh" in script
    env = {line.split("=", 1)[0] for line in script.splitlines() if "='" in line}
    for name in (
        "IN_QUEUE_URL",
        "OUT_QUEUE_URL",
        "RESULTS_BUCKET",
        "UPLOADS_BUCKET",
        "EXECUTIONS_TABLE",
        "MODELS",
        "DEFAULT_MODELS",
        "BATCH_WINDOW_MS",
        "MAX_BATCH_SIZE",
        "TORCH_COMPILE",
        "ASG_NAME",
        "LIFECYCLE_HOOK_NAME",
        "LAUNCH_HOOK_NAME",
        "STAGE",
        "AWS_REGION",
        "MODEL_CACHE_DIR",
    ):
        assert name in env, name
    assert synthesized.logical_id(fleet.in_queue.queue) in script
    assert f"ASG_NAME='{fleet.group_name}'" in script
    assert f"LIFECYCLE_HOOK_NAME='{fleet.lifecycle_hook_name}'" in script
    assert f"LAUNCH_HOOK_NAME='{fleet.launch_hook_name}'" in script


def test_worker_asset_holds_only_worker_and_shared_code() -> None:
    staged = stage_packages(WORKER_PACKAGES, "test-worker-", worker_files(321))
    root = Path(staged)
    assert {p.name for p in root.iterdir()} == {
        "gpu_worker",
        "shared",
        "stagehub-worker.service",
        "install.sh",
        "wait-in-service.sh",
        "stagehub-lifecycle.service",
        "lifecycle.sh",
        "worker-requirements.txt",
    }
    assert not list(root.rglob("__pycache__"))
    unit = (root / "stagehub-worker.service").read_text()
    assert "TimeoutStopSec=321" in unit
    assert "ExecStart=/opt/stagehub/venv/bin/python -m gpu_worker" in unit
    assert "Restart=always" in unit
    assert "KillSignal=SIGTERM" in unit


def test_worker_requirements_never_reinstall_torch() -> None:
    names = {line.split("==")[0].split("[")[0].lower() for line in worker_requirements().splitlines()}
    assert "torch" not in names
    assert "aws-cdk-lib" not in names
    assert "boto3" in names


def test_instance_scripts_are_valid_bash() -> None:
    for script in ("install.sh", "wait-in-service.sh", "lifecycle.sh"):
        subprocess.run(["bash", "-n", str(FILES_DIR / script)], check=True)


def test_group_scales_from_zero_with_metrics_and_a_termination_hook(synthesized: Synthesized) -> None:
    (group,) = synthesized.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    props = group["Properties"]
    assert props["MinSize"] == "0"
    assert int(props["MaxSize"]) >= 1
    assert "DesiredCapacity" not in props  # a deploy never resets what scaling chose
    assert props["MetricsCollection"][0]["Granularity"] == "1Minute"
    hooks = {
        h["Properties"]["LifecycleTransition"]: h["Properties"]
        for h in synthesized.of_type("AWS::AutoScaling::LifecycleHook").values()
    }
    fleet = _fleet(synthesized)
    terminating = hooks["autoscaling:EC2_INSTANCE_TERMINATING"]
    assert terminating["LifecycleHookName"] == fleet.lifecycle_hook_name
    assert terminating["DefaultResult"] == "CONTINUE"
    launching = hooks["autoscaling:EC2_INSTANCE_LAUNCHING"]
    assert launching["LifecycleHookName"] == fleet.launch_hook_name
    assert launching["DefaultResult"] == "ABANDON"  # a failed install is replaced, not counted as capacity
    assert set(hooks) == {"autoscaling:EC2_INSTANCE_TERMINATING", "autoscaling:EC2_INSTANCE_LAUNCHING"}
    synthesized.template.resource_count_is("AWS::AutoScaling::WarmPool", 0)


def test_instance_answers_its_lifecycle_hooks() -> None:
    """install.sh installs and starts the hook helper after the worker; the helper completes both hooks."""
    install = (FILES_DIR / "install.sh").read_text()
    assert install.index("stagehub-worker.service stagehub-lifecycle.service") < install.index(
        "systemctl start --no-block stagehub-lifecycle.service"
    )
    assert "enable --now" not in install  # would block in the warm pool, where the worker waits to be in service
    helper = (FILES_DIR / "lifecycle.sh").read_text()
    for needed in ("LAUNCH_HOOK_NAME", "LIFECYCLE_HOOK_NAME", "complete-lifecycle-action", "Terminated"):
        assert needed in helper
    assert "systemctl stop stagehub-worker.service" in helper
    unit = (FILES_DIR / "stagehub-lifecycle.service").read_text()
    assert "ExecStart=/usr/local/sbin/stagehub-lifecycle" in unit
    assert "EnvironmentFile=/etc/stagehub/worker.env" in unit


def test_target_tracking_on_backlog_per_instance(synthesized: Synthesized) -> None:
    policies = synthesized.of_type("AWS::AutoScaling::ScalingPolicy").values()
    (tracking,) = [p["Properties"] for p in policies if p["Properties"]["PolicyType"] == "TargetTrackingScaling"]
    config = tracking["TargetTrackingConfiguration"]
    assert config["TargetValue"] == 4
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["visible"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metrics["inservice"]["MetricStat"]["Metric"]["MetricName"] == "GroupInServiceInstances"
    returned = [m for m in metrics.values() if m.get("ReturnData")]
    assert [m["Expression"] for m in returned] == ["visible / inservice"]
    queue_dimension = metrics["visible"]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
    assert queue_dimension == {"Fn::GetAtt": [synthesized.logical_id(_fleet(synthesized).in_queue.queue), "QueueName"]}


def test_step_policy_starts_the_first_instance(synthesized: Synthesized) -> None:
    policies = synthesized.of_type("AWS::AutoScaling::ScalingPolicy")
    ((step_id, step),) = [(k, p) for k, p in policies.items() if p["Properties"]["PolicyType"] == "StepScaling"]
    assert step["Properties"]["AdjustmentType"] == "ExactCapacity"
    assert step["Properties"]["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    alarm = synthesized.resources[synthesized.logical_id(_fleet(synthesized).scale_from_zero_alarm)]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": step_id}]
    expressions = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    assert expressions == ["IF(visible > 0 AND desired < 1, 1, 0)"]


def test_instance_role_is_least_privilege(synthesized: Synthesized) -> None:
    fleet = _fleet(synthesized)
    role_id = synthesized.logical_id(fleet.role)
    statements = []
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            by_action.setdefault(action, []).append(statement)
    in_queue = synthesized.logical_id(fleet.in_queue.queue)
    assert in_queue in json.dumps(by_action["sqs:ReceiveMessage"])
    assert in_queue in json.dumps(by_action["sqs:ChangeMessageVisibility"])
    assert synthesized.logical_id(synthesized.stack.queues.out.queue) in json.dumps(by_action["sqs:SendMessage"])
    assert in_queue not in json.dumps(by_action["sqs:SendMessage"])
    (metrics,) = by_action["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": telemetry.NAMESPACE}}
    protection = json.dumps(by_action["autoscaling:SetInstanceProtection"])
    assert f"autoScalingGroupName/{fleet.group_name}" in protection
    assert "autoscaling:CompleteLifecycleAction" in by_action
    executions = synthesized.logical_id(synthesized.stack.data.table(res.EXECUTIONS))
    assert executions in json.dumps(by_action["dynamodb:GetItem"])
    assert "dynamodb:PutItem" not in by_action
    (role,) = [r for k, r in synthesized.of_type("AWS::IAM::Role").items() if k == role_id]
    assert "AmazonSSMManagedInstanceCore" in json.dumps(role["Properties"]["ManagedPolicyArns"])


def test_private_subnets_and_gateway_endpoints(synthesized: Synthesized) -> None:
    (group,) = synthesized.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    subnet_ids = {ref["Ref"] for ref in group["Properties"]["VPCZoneIdentifier"]}
    subnets = synthesized.of_type("AWS::EC2::Subnet")
    assert all(subnets[s]["Properties"]["MapPublicIpOnLaunch"] is False for s in subnet_ids)
    services = json.dumps(
        [e["Properties"]["ServiceName"] for e in synthesized.of_type("AWS::EC2::VPCEndpoint").values()]
    )
    assert ".s3" in services
    assert ".dynamodb" in services
    (flow_log,) = synthesized.of_type("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "REJECT"
    group = synthesized.resources[flow_log["Properties"]["LogGroupName"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == 30  # logRetentionDays
    assert group["DeletionPolicy"] == "Delete"


def test_variant_warm_pool_and_model_bucket(variant: Synthesized) -> None:
    variant.template.resource_count_is("AWS::AutoScaling::WarmPool", 1)
    (group,) = variant.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    assert (group["Properties"]["MinSize"], group["Properties"]["MaxSize"]) == ("1", "6")
    policies = json.dumps([p["Properties"] for p in variant.of_type("AWS::IAM::Policy").values()])
    assert "stagehub-model-weights/big-sd/*" in policies
