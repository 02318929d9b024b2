"""The GPU fleet: pinned offline boot, readiness before service, rollout, scaling on the real backlog, a cheap
shared network, least privilege and disposable dev stages (one assertion group per point of issue 13)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from infra.gpu_fleet import FILES_DIR, worker_files, worker_requirements
from infra.gpu_fleet.bundle import INSTANCE_FILES, drop_ami_packages
from infra.gpu_fleet.versions import DLAMI_SSM_PARAMETER, LOCK_FILE, TORCH_VERSION, pinned_version
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


def _role_statements(synthesized: Synthesized, role: Any) -> dict[str, list[dict[str, Any]]]:
    role_id = synthesized.logical_id(role)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                for action in actions:
                    by_action.setdefault(action, []).append(statement)
    return by_action


def _alarm(synthesized: Synthesized, alarm: Any) -> dict[str, Any]:
    return synthesized.resources[synthesized.logical_id(alarm)]["Properties"]


# --- 1. pinned, offline boot ---


def test_launch_template_is_hardened(synthesized: Synthesized) -> None:
    data = _launch_data(synthesized)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert "KeyName" not in data
    (volume,) = data["BlockDeviceMappings"]
    assert volume["Ebs"]["Encrypted"] is True
    assert volume["Ebs"]["VolumeType"] == "gp3"
    assert data["InstanceType"].startswith(("g5.", "g6."))


def test_ami_is_the_family_of_the_tests_torch_or_a_pinned_id(synthesized: Synthesized, variant: Synthesized) -> None:
    assert pinned_version("torch") == TORCH_VERSION
    assert f"pytorch-{'.'.join(TORCH_VERSION.split('.')[:2])}-" in DLAMI_SSM_PARAMETER
    image_parameter = _launch_data(synthesized)["ImageId"]["Ref"]
    assert synthesized.template.to_json()["Parameters"][image_parameter]["Default"] == DLAMI_SSM_PARAMETER
    # The variant pins an id per region in context: no SSM parameter, the literal id.
    assert _launch_data(variant)["ImageId"] == "ami-0123456789abcdef0"


def test_user_data_installs_offline_from_the_two_assets(synthesized: Synthesized) -> None:
    script = _user_data(synthesized)
    fleet = _fleet(synthesized)
    assert script.count("aws s3 cp") == 2  # code and wheels, nothing else
    assert "install.sh" in script
    assert "pip install" not in script
    install = (FILES_DIR / "install.sh").read_text()
    (pip_line,) = [line for line in install.replace("\\\n", " ").splitlines() if "pip install" in line]
    for flag in ("--no-index", "--require-hashes", "--no-deps", "--find-links", "worker.lock"):
        assert flag in pip_line
    env = {line.split("=", 1)[0] for line in script.splitlines() if "='" in line}
    for name in ("IN_QUEUE_URL", "OUT_QUEUE_URL", "RESULTS_BUCKET", "EXECUTIONS_TABLE", "MODELS", "ASG_NAME"):
        assert name in env, name
    for name in ("LIFECYCLE_HOOK_NAME", "LAUNCH_HOOK_NAME", "READY_TIMEOUT_S", "WORKER_LOG_GROUP"):
        assert name in env, name
    assert f"LAUNCH_HOOK_NAME='{fleet.launch_hook_name}'" in script


def test_worker_asset_holds_code_lock_and_instance_files() -> None:
    root = Path(stage_packages(WORKER_PACKAGES, "test-worker-", worker_files(321)))
    assert {p.name for p in root.iterdir()} == {"gpu_worker", "shared", "worker.lock", *INSTANCE_FILES}
    assert not list(root.rglob("__pycache__"))
    unit = (root / "stagehub-worker.service").read_text()
    assert "TimeoutStopSec=321" in unit
    assert "ExecStart=/opt/stagehub/venv/bin/python -m gpu_worker" in unit
    assert "OnFailure=stagehub-unhealthy.service" in unit
    assert "RuntimeDirectory=stagehub" in unit


def test_lock_pins_every_worker_requirement_with_hashes_and_no_torch() -> None:
    lock = LOCK_FILE.read_text()
    pins = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", lock, flags=re.MULTILINE))
    for line in worker_requirements().splitlines():
        name, version = line.split("==")
        assert pins[name.split("[")[0].lower()] == version, name  # the fleet runs what the tests run
    assert "torch" not in pins
    assert not any(name.startswith("nvidia-") or name == "triton" for name in pins)
    assert "aws-cdk-lib" not in pins
    assert "argon2-cffi" not in pins
    entries = [block for block in lock.split("\n") if re.match(r"^[a-z0-9._-]+==", block)]
    assert len(entries) == len(pins)
    assert lock.count("--hash=sha256:") >= len(pins)


def test_dropping_ami_packages_keeps_what_others_need_too() -> None:
    compiled = "\n".join(
        [
            "accelerate==1 \\",
            "    --hash=sha256:a",
            "    # via -r worker.in",
            "filelock==2 \\",
            "    --hash=sha256:b",
            "    # via",
            "    #   huggingface-hub",
            "    #   torch",
            "sympy==3 \\",
            "    --hash=sha256:c",
            "    # via torch",
            "mpmath==4 \\",
            "    --hash=sha256:d",
            "    # via sympy",
            "torch==5 \\",
            "    --hash=sha256:e",
            "    # via -r worker.in",
        ]
    )
    kept = set(re.findall(r"^([a-z]+)==", drop_ami_packages(compiled), flags=re.MULTILINE))
    assert kept == {"accelerate", "filelock"}


def test_instance_scripts_are_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(FILES_DIR / "install.sh")], check=True)
    assert not list(FILES_DIR.glob("*.sh"))[1:], "only install.sh is shell; the rest is gpu_worker Python"


def test_the_performance_profile_and_its_compile_cache_on_the_instance_disk_come_from_context(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    base, plain = _user_data(synthesized), _user_data(variant)
    assert "PERFORMANCE_PROFILE='auto'" in base  # fast on the GPU: it compiles at warm-up, so it waits longer
    assert "READY_TIMEOUT_S='2700'" in base
    assert "WARM_UP_SIZES='[]'" in base
    assert "COMPILE_CACHE_DIR='/var/cache/stagehub/torch-compile'" in base
    assert "PERFORMANCE_PROFILE='plain'" in plain
    assert "READY_TIMEOUT_S='900'" in plain
    assert """WARM_UP_SIZES='["768x768"]'""" in plain
    install = (FILES_DIR / "install.sh").read_text()
    assert 'mkdir -p "${MODEL_CACHE_DIR}" "${COMPILE_CACHE_DIR}"' in install
    assert 'chown -R stagehub:stagehub "${MODEL_CACHE_DIR}" "${COMPILE_CACHE_DIR}"' in install


# --- 2. ready before in service, replaced when broken, visible ---


def test_launch_hook_waits_for_readiness_and_is_abandoned_after(synthesized: Synthesized) -> None:
    hooks = {
        h["Properties"]["LifecycleTransition"]: h["Properties"]
        for h in synthesized.of_type("AWS::AutoScaling::LifecycleHook").values()
    }
    fleet = _fleet(synthesized)
    launching = hooks["autoscaling:EC2_INSTANCE_LAUNCHING"]
    assert launching["LifecycleHookName"] == fleet.launch_hook_name
    assert launching["DefaultResult"] == "ABANDON"
    assert launching["HeartbeatTimeout"] > 2700  # outlives READY_TIMEOUT_S, after which the instance abandons itself
    terminating = hooks["autoscaling:EC2_INSTANCE_TERMINATING"]
    assert terminating["LifecycleHookName"] == fleet.lifecycle_hook_name
    assert terminating["DefaultResult"] == "CONTINUE"
    unit = (FILES_DIR / "stagehub-lifecycle.service").read_text()
    assert "python -m gpu_worker.readiness lifecycle" in unit


def test_failed_launches_and_replacements_reach_the_alarm_topic(synthesized: Synthesized) -> None:
    topic = synthesized.logical_id(synthesized.stack.monitoring.topic)
    patterns = {}
    for rule in synthesized.of_type("AWS::Events::Rule").values():
        pattern = rule["Properties"].get("EventPattern", {})
        if pattern.get("source") == ["aws.autoscaling"]:
            assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": topic}
            patterns[pattern["detail-type"][0]] = pattern["detail"]
    assert set(patterns) == {
        "EC2 Instance Launch Unsuccessful",
        "EC2 Instance Terminate Unsuccessful",
        "EC2 Instance Terminate Successful",
    }
    assert patterns["EC2 Instance Launch Unsuccessful"]["AutoScalingGroupName"] == [_fleet(synthesized).group_name]
    assert "Cause" in patterns["EC2 Instance Terminate Successful"]  # replacements only, not every scale-in


def test_worker_logs_are_shipped_with_retention(synthesized: Synthesized) -> None:
    fleet = _fleet(synthesized)
    group = synthesized.resources[synthesized.logical_id(fleet.workers.log_group)]
    assert group["Properties"]["RetentionInDays"] == 30
    statements = _role_statements(synthesized, fleet.role)
    (logs_statement,) = statements["logs:PutLogEvents"]
    assert "logs:CreateLogGroup" not in statements
    assert logs_statement["Resource"] == {"Fn::GetAtt": [synthesized.logical_id(fleet.workers.log_group), "Arn"]}
    agent = json.loads((FILES_DIR / "cloudwatch-agent.json").read_text())
    files = {entry["file_path"] for entry in agent["logs"]["logs_collected"]["files"]["collect_list"]}
    assert "/var/log/stagehub/worker.log" in files


# --- 3. rollout ---


def test_a_new_launch_template_version_starts_an_instance_refresh(synthesized: Synthesized) -> None:
    fleet = _fleet(synthesized)
    resource = fleet.workers.refresh.node.default_child.node.default_child  # CustomResource -> CfnResource
    refresh = synthesized.resources[synthesized.stack.resolve(resource.logical_id)]
    assert refresh["Type"] == "Custom::AWS"
    create = json.dumps(refresh["Properties"]["Create"])
    assert "describeInstanceRefreshes" in create  # nothing to refresh yet
    assert "startInstanceRefresh" not in create
    update = json.dumps(refresh["Properties"]["Update"])
    template_id = synthesized.logical_id(fleet.launch_template)
    assert "startInstanceRefresh" in update
    assert template_id in update
    assert "LatestVersionNumber" in update
    for preference in ('ScaleInProtectedInstances\\":\\"Wait', 'MinHealthyPercentage\\":100', "SkipMatching"):
        assert preference in update.replace(" ", ""), preference


# --- 4. scaling on the real backlog ---


def test_target_tracking_counts_messages_in_flight(synthesized: Synthesized) -> None:
    policies = synthesized.of_type("AWS::AutoScaling::ScalingPolicy").values()
    (tracking,) = [p["Properties"] for p in policies if p["Properties"]["PolicyType"] == "TargetTrackingScaling"]
    config = tracking["TargetTrackingConfiguration"]
    assert config["TargetValue"] == 12  # 120 s latency goal / 10 s per execution
    assert config["DisableScaleIn"] is True
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["inflight"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesNotVisible"
    assert metrics["visible"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    returned = [m for m in metrics.values() if m.get("ReturnData")]
    assert [m["Expression"] for m in returned] == ["(visible + inflight) / inservice"]


def test_scale_in_only_after_the_idle_minutes(synthesized: Synthesized, variant: Synthesized) -> None:
    for app, minutes in ((synthesized, 5), (variant, 3)):
        scaling = _fleet(app).scaling
        idle = _alarm(app, scaling.idle_alarm)
        assert (idle["EvaluationPeriods"], idle["DatapointsToAlarm"], idle.get("Period", 60)) == (
            minutes,
            minutes,
            60,
        )
        assert idle["TreatMissingData"] == "breaching"
        assert [m["Expression"] for m in idle["Metrics"] if "Expression" in m] == ["visible + inflight"]
        shrink = _alarm(app, scaling.shrink_alarm)
        assert shrink["EvaluationPeriods"] == minutes
        assert shrink["Threshold"] == scaling.target / 2
    steps = [
        p["Properties"]
        for p in synthesized.of_type("AWS::AutoScaling::ScalingPolicy").values()
        if p["Properties"]["PolicyType"] == "StepScaling"
    ]
    assert sorted((s["AdjustmentType"], s["StepAdjustments"][0]["ScalingAdjustment"]) for s in steps) == [
        ("ChangeInCapacity", -1),
        ("ExactCapacity", 0),
    ]


def test_the_starter_sizes_every_group_each_minute(synthesized: Synthesized) -> None:
    starter = synthesized.stack.fleet_starter
    fleet = _fleet(synthesized)
    rule = synthesized.resources[synthesized.logical_id(starter.rule)]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    (target,) = rule["Targets"]
    event = json.loads(json.dumps(synthesized.stack.resolve(target["Input"])))
    assert fleet.group_name in json.dumps(event)
    assert '\\"backlogTarget\\":12' in json.dumps(event).replace(" ", "")
    function = synthesized.resources[synthesized.logical_id(starter.function)]["Properties"]
    assert function["Handler"] == "functions.fleet.handler.lambda_handler"
    statements = _role_statements(synthesized, starter.function.role)
    assert f"autoScalingGroupName/{fleet.group_name}" in json.dumps(statements["autoscaling:SetDesiredCapacity"])
    assert synthesized.logical_id(fleet.in_queue.queue) in json.dumps(statements["sqs:GetQueueAttributes"])
    assert "sqs:ReceiveMessage" not in statements


def test_warm_pool_only_when_asked(synthesized: Synthesized, variant: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::AutoScaling::WarmPool", 0)
    (pool,) = variant.of_type("AWS::AutoScaling::WarmPool").values()
    assert pool["Properties"]["PoolState"] == "Stopped"
    assert pool["Properties"]["InstanceReusePolicy"] == {"ReuseOnScaleIn": True}
    (group,) = variant.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    assert (group["Properties"]["MinSize"], group["Properties"]["MaxSize"]) == ("1", "6")
    (group,) = synthesized.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    assert "DesiredCapacity" not in group["Properties"]  # a deploy never resets what scaling chose


# --- 5. cheap when idle, least privilege ---


def test_one_vpc_without_nat_public_subnets_by_default(synthesized: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::EC2::VPC", 1)
    synthesized.template.resource_count_is("AWS::EC2::NatGateway", 0)
    synthesized.template.resource_count_is("AWS::EC2::EIP", 0)
    synthesized.template.resource_count_is("AWS::EC2::VPCEndpoint", 2)  # the free gateway endpoints only
    (group,) = synthesized.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    subnets = synthesized.of_type("AWS::EC2::Subnet")
    for ref in group["Properties"]["VPCZoneIdentifier"]:
        assert subnets[ref["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is True
    for security_group in synthesized.of_type("AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in security_group["Properties"]
    synthesized.template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)
    (flow_log,) = synthesized.of_type("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "REJECT"


def test_workers_may_only_reach_https_endpoints(synthesized: Synthesized) -> None:
    """Issue 12's least privilege for the fleet: no inbound rule, and outbound only HTTPS (AWS's APIs)."""
    (worker_group,) = [
        sg
        for sg in synthesized.of_type("AWS::EC2::SecurityGroup").values()
        if "GPU workers" in sg["Properties"]["GroupDescription"]
    ]
    egress = worker_group["Properties"]["SecurityGroupEgress"]
    assert [(rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) for rule in egress] == [("tcp", 443, 443)]


def test_private_subnets_get_interface_endpoints_instead(variant: Synthesized) -> None:
    variant.template.resource_count_is("AWS::EC2::NatGateway", 0)
    variant.template.resource_count_is("AWS::EC2::InternetGateway", 0)
    services = json.dumps([e["Properties"]["ServiceName"] for e in variant.of_type("AWS::EC2::VPCEndpoint").values()])
    for service in (".sqs", ".monitoring", ".logs", ".autoscaling", ".ssm", ".s3", ".dynamodb"):
        assert service in services, service
    (group,) = variant.of_type("AWS::AutoScaling::AutoScalingGroup").values()
    subnets = variant.of_type("AWS::EC2::Subnet")
    assert all(
        subnets[r["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is False
        for r in group["Properties"]["VPCZoneIdentifier"]
    )


def test_instance_role_reads_only_its_models_and_loras_prefixes(variant: Synthesized) -> None:
    fleet = _fleet(variant)
    reads = json.dumps(_role_statements(variant, fleet.role)["s3:GetObject"])
    for prefix in ("stagehub-model-weights/big-sd/*", "stagehub-model-weights/loras/ink-style/*"):
        assert prefix in reads
    lists = _role_statements(variant, fleet.role)["s3:ListBucket"]
    prefixes = sorted(p for s in lists for p in s.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []))
    assert prefixes == ["big-sd/*", "loras/ink-style/*"]


def test_instance_role_is_least_privilege(synthesized: Synthesized) -> None:
    fleet = _fleet(synthesized)
    by_action = _role_statements(synthesized, fleet.role)
    in_queue = synthesized.logical_id(fleet.in_queue.queue)
    assert in_queue in json.dumps(by_action["sqs:ReceiveMessage"])
    assert synthesized.logical_id(synthesized.stack.queues.out.queue) in json.dumps(by_action["sqs:SendMessage"])
    assert in_queue not in json.dumps(by_action["sqs:SendMessage"])
    (metrics,) = by_action["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": telemetry.NAMESPACE}}
    own_group = json.dumps(by_action["autoscaling:SetInstanceHealth"])
    assert f"autoScalingGroupName/{fleet.group_name}" in own_group
    assert own_group == json.dumps(by_action["autoscaling:CompleteLifecycleAction"])
    executions = synthesized.logical_id(synthesized.stack.data.table(res.EXECUTIONS))
    assert executions in json.dumps(by_action["dynamodb:GetItem"])
    assert "dynamodb:PutItem" not in by_action


def test_instance_role_reads_only_its_own_asset_objects(synthesized: Synthesized) -> None:
    fleet = _fleet(synthesized)
    by_action = _role_statements(synthesized, fleet.role)
    assets = [s for s in by_action["s3:GetObject"] if s.get("Sid") == "OwnWorkerAssets"]
    (statement,) = assets
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    text = json.dumps(resources)
    assert len(resources) == 2
    for asset in (fleet.code, fleet.wheels):
        assert f"/{asset.asset_hash}.zip" in text  # the exact object, not the bootstrap bucket's objects
    assert "/*" not in text


# --- 7. dev is disposable, prod is safe ---


def test_destroyable_stage_empties_and_deletes_its_buckets(synthesized: Synthesized, variant: Synthesized) -> None:
    for bucket in synthesized.of_type("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"  # stage "test": retained unless told otherwise
    variant.template.resource_count_is("Custom::S3AutoDeleteObjects", len(variant.of_type("AWS::S3::Bucket")))
    for table in variant.of_type("AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Delete"
        assert table["Properties"].get("DeletionProtectionEnabled") is False


# --- 6. the simulator reads the template ---


def test_the_simulator_reads_its_scaling_from_the_template(synthesized: Synthesized) -> None:
    from bench.fleet_sim import ScalingParams

    params = ScalingParams.from_template(synthesized.template.to_json())
    assert (params.min_size, params.max_size, params.target) == (0, 2, 12)
    assert (params.idle_minutes, params.shrink_below, params.starter_period_s) == (5, 6, 60)
    assert params.launch_hook_timeout_s > 900
