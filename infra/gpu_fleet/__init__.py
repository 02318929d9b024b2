"""The GPU fleet of one backend: VPC, launch template, instance role, Auto Scaling group and its scaling.

Instances boot the Deep Learning AMI (resolved from SSM at deploy time), fetch the worker (an S3 asset of
`gpu_worker/`, `shared/`, its requirements and the files beside this module), install it on the AMI's PyTorch
and run it under systemd (`stagehub-worker.service`, one process per GPU). A second unit,
`stagehub-lifecycle.service`, answers the group's lifecycle hooks: it completes the launch hook once the worker
is installed (on every boot, so also when an instance leaves the warm pool), and on termination stops the worker
(which finishes or returns its messages) before it completes the termination hook (the worker's supervisor does
that too; this unit is the backstop when the worker is not running). The group scales on backlog
per instance (in-queue visible messages / in-service instances, metric math) with a step policy that starts the
first instance when the queue has work and the group is empty; see docs/ops.md for the maths.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from infra import nag
from infra.config import StagehubConfig
from infra.data import Data
from infra.functions import retention_days
from infra.packaging import REPO_ROOT, WORKER_PACKAGES, stage_packages
from infra.queues import QueuePair, Queues
from shared import resources as res
from shared import telemetry

FILES_DIR = Path(__file__).resolve().parent
APP_DIR = "/opt/stagehub/app"
ENV_FILE = "/etc/stagehub/worker.env"
MODEL_CACHE_DIR = "/var/cache/stagehub/models"
INSTANCE_WARMUP_S = 600  # boot, pip install and the first model load
# How long a new instance may take to install the worker before the launch hook gives up on it (and Auto Scaling
# replaces it): the DLAMI's first boot plus the pip install of the worker's requirements.
LAUNCH_TIMEOUT_S = 1800
SCALE_METRIC_PERIOD_S = 60
# Requirements the worker never installs from PyPI: torch comes with the AMI (CUDA build); the rest is infra/CLI.
_NOT_FOR_WORKER = ("torch", "aws-cdk-lib", "constructs", "cdk-nag", "httpx", "typer", "rich")


def worker_requirements() -> str:
    """gpu_worker/requirements.txt when the worker has one, else requirements.txt; never torch or infra pins."""
    source = REPO_ROOT / "gpu_worker" / "requirements.txt"
    if not source.exists():
        source = REPO_ROOT / "requirements.txt"
    kept = []
    for line in source.read_text().splitlines():
        name = line.split("==")[0].split("[")[0].strip().lower()
        if line.strip() and not line.startswith(("#", "-")) and name not in _NOT_FOR_WORKER:
            kept.append(line.strip())
    return "\n".join(kept) + "\n"


def worker_files(grace_s: int) -> dict[str, str]:
    """The files installed beside the worker's code (systemd unit with its stop timeout filled in)."""
    unit = (FILES_DIR / "stagehub-worker.service").read_text().replace("@GRACE_S@", str(grace_s))
    return {
        "stagehub-worker.service": unit,
        "install.sh": (FILES_DIR / "install.sh").read_text(),
        "wait-in-service.sh": (FILES_DIR / "wait-in-service.sh").read_text(),
        "stagehub-lifecycle.service": (FILES_DIR / "stagehub-lifecycle.service").read_text(),
        "lifecycle.sh": (FILES_DIR / "lifecycle.sh").read_text(),
        "worker-requirements.txt": worker_requirements(),
    }


class GpuFleet(Construct):
    """One backend's workers: an Auto Scaling group of GPU instances consuming that backend's in-queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        backend: str,
        data: Data,
        queues: Queues,
        alarm_action: cloudwatch.IAlarmAction | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.backend = backend
        self.in_queue: QueuePair = queues.in_queues[backend]
        self.group_name = f"stagehub-{config.stage}-{backend}"
        self.lifecycle_hook_name = f"{self.group_name}-terminating"
        self.launch_hook_name = f"{self.group_name}-launching"
        self.vpc = self._vpc()
        security_group = ec2.SecurityGroup(
            self,
            "WorkerSecurityGroup",
            vpc=self.vpc,
            description="stagehub GPU workers: no inbound traffic at all (SSM Session Manager for access)",
            allow_all_outbound=True,
        )
        asset = s3_assets.Asset(
            self,
            "WorkerCode",
            path=stage_packages(WORKER_PACKAGES, "stagehub-worker-", worker_files(config.termination_grace_s)),
        )
        self.role = self._role(data, queues, asset)
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            launch_template_name=self.group_name,
            machine_image=ec2.MachineImage.from_ssm_parameter(config.dlami_parameter, os=ec2.OperatingSystemType.LINUX),
            instance_type=ec2.InstanceType(config.gpu_instance_type),
            role=self.role,
            security_group=security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            user_data=self._user_data(data, queues, asset),
            block_devices=[
                ec2.BlockDevice(
                    device_name=config.root_device_name,
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.root_volume_gib,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            auto_scaling_group_name=self.group_name,
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            launch_template=self.launch_template,
            min_capacity=config.min_gpu_instances,
            max_capacity=config.max_gpu_instances,
            group_metrics=[autoscaling.GroupMetrics.all()],
            default_instance_warmup=cdk.Duration.seconds(INSTANCE_WARMUP_S),
        )
        # Completed by stagehub-lifecycle.service once the worker is installed; an instance that never gets there
        # (a failed install) is abandoned, so Auto Scaling replaces it instead of counting it as capacity.
        self.group.add_lifecycle_hook(
            "LaunchHook",
            lifecycle_hook_name=self.launch_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=cdk.Duration.seconds(LAUNCH_TIMEOUT_S),
            default_result=autoscaling.DefaultResult.ABANDON,
        )
        # Completed by stagehub-lifecycle.service after the worker stopped (finished or returned its messages).
        self.group.add_lifecycle_hook(
            "TerminationHook",
            lifecycle_hook_name=self.lifecycle_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=cdk.Duration.seconds(config.termination_grace_s),
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        if config.warm_pool:
            self.group.add_warm_pool(min_size=0, pool_state=autoscaling.PoolState.STOPPED)
        self.target_tracking = self._target_tracking()
        self.scale_from_zero_alarm = self._scale_from_zero()
        nag.acknowledge(
            self.group,
            "AS3",
            "scaling activity is graphed on the dashboard (fleet size) and kept in the group's activity history; "
            "per-event e-mails would page ops for routine scale-ups",
        )

    # --- network ---

    def _vpc(self) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=None if self._config.availability_zones else 2,
            availability_zones=list(self._config.availability_zones) or None,
            nat_gateways=self._config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="workers", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogsGroup",
            retention=retention_days(self._config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        return vpc

    # --- instance ---

    def _role(self, data: Data, queues: Queues, asset: s3_assets.Asset) -> iam.Role:
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"stagehub {self._config.stage}: GPU workers of backend {self.backend}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        nag.acknowledge(
            role,
            "IAM4",
            "AmazonSSMManagedInstanceCore is AWS's policy for Session Manager, the only way into the instances "
            "(no SSH, no inbound rules)",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore",
        )
        self.in_queue.queue.grant_consume_messages(role)
        queues.out.queue.grant_send_messages(role)
        data.bucket(res.RESULTS_BUCKET).grant_read_write(role)
        data.bucket(res.UPLOADS_BUCKET).grant_read(role)
        data.bucket(res.PIPELINES_BUCKET).grant_read(role)
        data.table(res.EXECUTIONS).grant_read_data(role)  # cancel checks between stages
        asset.grant_read(role)
        for bucket_spec in (res.RESULTS_BUCKET, res.UPLOADS_BUCKET, res.PIPELINES_BUCKET):
            nag.acknowledge_objects(
                role,
                data.bucket(bucket_spec),
                f"objects of the {bucket_spec.logical_id} bucket only; keys are per execution, chosen at run time",
            )
        nag.acknowledge_indexes(role, data.table(res.EXECUTIONS))
        nag.acknowledge_actions(
            role,
            nag.S3_READ_ACTIONS + nag.S3_WRITE_ACTIONS,
            "the action group of a CDK S3 grant (read or read-write), on named buckets only",
        )
        nag.acknowledge_objects(
            role, asset.bucket, "the worker code asset, in the CDK bootstrap bucket; the object key is a content hash"
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WorkerMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": telemetry.NAMESPACE}},
            )
        )
        nag.acknowledge(
            role,
            "IAM5",
            "PutMetricData has no resource-level permissions; the condition limits it to stagehub's namespace",
            "Resource::*",
        )
        own_group = cdk.Stack.of(self).format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{self.group_name}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnScaleInProtectionAndLifecycle",
                actions=[
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:RecordLifecycleActionHeartbeat",
                ],
                resources=[own_group],
            )
        )
        nag.acknowledge_resource(
            role,
            own_group,
            "an Auto Scaling group's ARN holds a generated id; the group name pins it to this fleet's group",
        )
        self._grant_model_sources(role)
        return role

    def _grant_model_sources(self, role: iam.Role) -> None:
        """Read access to the S3 prefixes that model sources name (s3://bucket/prefix/)."""
        for name, model in sorted(self._config.models.items()):
            if not model.source.startswith("s3://"):
                continue
            bucket_name, _, prefix = model.source.removeprefix("s3://").partition("/")
            bucket = s3.Bucket.from_bucket_name(self, f"ModelSource{_pascal(name)}", bucket_name)
            weights = bucket.arn_for_objects(f"{prefix}*")
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[weights]))
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                )
            )
            nag.acknowledge_resource(
                role, weights, f"the weights of model {name}: every object under its configured S3 prefix"
            )

    def worker_environment(self, data: Data, queues: Queues) -> dict[str, str]:
        """The worker's settings (shared.settings field names in upper case)."""
        config = self._config
        stack = cdk.Stack.of(self)
        env = {
            "STAGE": config.stage,
            "BACKEND": self.backend,
            "AWS_REGION": cdk.Aws.REGION,
            "AWS_DEFAULT_REGION": cdk.Aws.REGION,
            self.in_queue.spec.env_var: self.in_queue.queue.queue_url,
            res.OUT_QUEUE.env_var: queues.out.queue.queue_url,
            res.BACKEND_QUEUES_ENV_VAR: stack.to_json_string({self.backend: self.in_queue.queue.queue_url}),
            "MODELS": config.models_json(),
            "DEFAULT_MODELS": config.default_models_json(),
            "BATCH_WINDOW_MS": str(config.batch_window_ms),
            "MAX_BATCH_SIZE": str(config.max_batch_size),
            "TORCH_COMPILE": "true" if config.torch_compile else "false",
            "ASG_NAME": self.group_name,
            "LIFECYCLE_HOOK_NAME": self.lifecycle_hook_name,
            "LAUNCH_HOOK_NAME": self.launch_hook_name,
            "MODEL_CACHE_DIR": MODEL_CACHE_DIR,
            "METRICS_NAMESPACE": telemetry.NAMESPACE,
            "DEVICE": "cuda",
        }
        for spec in res.TABLES:
            env[spec.env_var] = data.table(spec).table_name
        for bucket in res.BUCKETS:
            env[bucket.env_var] = data.bucket(bucket).bucket_name
        return env

    def _user_data(self, data: Data, queues: Queues, asset: s3_assets.Asset) -> ec2.UserData:
        user_data = ec2.UserData.for_linux()
        user_data.add_commands("set -euxo pipefail", f"mkdir -p {APP_DIR} /etc/stagehub")
        archive = user_data.add_s3_download_command(
            bucket=asset.bucket, bucket_key=asset.s3_object_key, local_file="/opt/stagehub/worker.zip"
        )
        lines = [
            f"{key}='{_single_quoted(value)}'" for key, value in sorted(self.worker_environment(data, queues).items())
        ]
        user_data.add_commands(
            f"cd {APP_DIR} && python3 -m zipfile -e {archive} . || unzip -o {archive} -d {APP_DIR}",
            f"cat > {ENV_FILE} <<'STAGEHUB_ENV'",
            *lines,
            "STAGEHUB_ENV",
            f"chmod 0640 {ENV_FILE}",
            f"bash {APP_DIR}/install.sh",
        )
        return user_data

    # --- scaling ---

    def _group_metric(self, name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/AutoScaling",
            metric_name=name,
            dimensions_map={"AutoScalingGroupName": self.group_name},
            statistic="Average",
            period=cdk.Duration.seconds(SCALE_METRIC_PERIOD_S),
        )

    def _target_tracking(self) -> autoscaling.CfnScalingPolicy:
        """Backlog per instance = visible messages / in-service instances, held at the configured target."""
        policy = autoscaling.CfnScalingPolicy
        queue_name = self.in_queue.queue.queue_name
        return policy(
            self,
            "BacklogPerInstance",
            auto_scaling_group_name=self.group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=INSTANCE_WARMUP_S,
            target_tracking_configuration=policy.TargetTrackingConfigurationProperty(
                target_value=self._config.backlog_target_per_instance,
                customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="visible",
                            return_data=False,
                            metric_stat=policy.TargetTrackingMetricStatProperty(
                                stat="Sum",
                                metric=policy.MetricProperty(
                                    namespace="AWS/SQS",
                                    metric_name="ApproximateNumberOfMessagesVisible",
                                    dimensions=[policy.MetricDimensionProperty(name="QueueName", value=queue_name)],
                                ),
                            ),
                        ),
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="inservice",
                            return_data=False,
                            metric_stat=policy.TargetTrackingMetricStatProperty(
                                stat="Average",
                                metric=policy.MetricProperty(
                                    namespace="AWS/AutoScaling",
                                    metric_name="GroupInServiceInstances",
                                    dimensions=[
                                        policy.MetricDimensionProperty(
                                            name="AutoScalingGroupName", value=self.group_name
                                        )
                                    ],
                                ),
                            ),
                        ),
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="backlogPerInstance",
                            label="In-queue backlog per in-service instance",
                            expression="visible / inservice",
                            return_data=True,
                        ),
                    ]
                ),
            ),
        )

    def _scale_from_zero(self) -> cloudwatch.Alarm:
        """Target tracking cannot divide by zero instances: an empty group with queued work goes to one."""
        step = autoscaling.StepScalingAction(
            self,
            "ScaleFromZero",
            auto_scaling_group=self.group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
            estimated_instance_warmup=cdk.Duration.seconds(INSTANCE_WARMUP_S),
        )
        step.add_adjustment(adjustment=1, lower_bound=0)
        expression = cloudwatch.MathExpression(
            expression="IF(visible > 0 AND desired < 1, 1, 0)",
            using_metrics={
                "visible": self.in_queue.queue.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=cdk.Duration.seconds(SCALE_METRIC_PERIOD_S)
                ),
                "desired": self._group_metric("GroupDesiredCapacity").with_(statistic="Maximum"),
            },
            label="Queued work with no instance",
            period=cdk.Duration.seconds(SCALE_METRIC_PERIOD_S),
        )
        alarm = cloudwatch.Alarm(
            self,
            "QueuedWorkWithNoInstance",
            alarm_description=f"stagehub {self._config.stage}: {self.backend} has queued work and no instance",
            metric=expression,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.AutoScalingAction(step))
        return alarm


def _single_quoted(value: str) -> str:
    """A value for a systemd EnvironmentFile inside single quotes, where nothing is special but the quote."""
    if "'" in str(value):
        raise ValueError(f"worker setting values cannot contain a single quote: {value!r}")
    return value


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").replace(".", "-").split("-"))
