"""One backend's Auto Scaling group: launch template, hooks, health, rollout and launch-failure notices.

- Launch: an instance waits in `Pending:Wait` until its workers are ready (gpu_worker/readiness.py completes the
  launch hook); the hook's own timeout, a little longer than the worker's `readyTimeoutSeconds`, abandons it
  when nothing answers at all (the instance never booted the worker). ABANDON terminates it and launches another.
- Health: a crash-looping worker sets its instance Unhealthy (SetInstanceHealth), which the group replaces.
- Rollout: a deploy that changes the launch template (worker code, settings, AMI) starts an instance refresh
  that launches new instances before terminating old ones, waits for protected (busy) instances to become
  idle, and goes through both lifecycle hooks, so in-flight work finishes or returns to the queue.
- Notices: failed launches and replacements go to the alarm topic (EventBridge rules on Auto Scaling events).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra import nag
from infra.config import StagehubConfig
from infra.gpu_fleet.versions import DLAMI_SSM_PARAMETER
from infra.network import Network

APP_DIR = "/opt/stagehub/app"
WHEELS_DIR = "/opt/stagehub/wheels"
ENV_FILE = "/etc/stagehub/worker.env"
HOOK_MARGIN_S = 300  # the launch hook outlives the worker's own readiness timeout, which answers it first
INSTANCE_WARMUP_S = 120  # after the launch hook: the worker is ready by then (readiness), so little is left


def machine_image(config: StagehubConfig) -> ec2.IMachineImage:
    """The pinned AMI of each region in `gpuAmiIds`; without any, the DLAMI family's parameter (resolved at
    each deploy: not pinned, see docs/ops.md)."""
    if config.gpu_ami_ids:
        return ec2.MachineImage.generic_linux(dict(config.gpu_ami_ids))
    return ec2.MachineImage.from_ssm_parameter(DLAMI_SSM_PARAMETER, os=ec2.OperatingSystemType.LINUX)


class WorkerGroup(Construct):
    """`group`, `launch_template`, the hooks' names, the worker log group and the rollout."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        network: Network,
        group_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._network = network
        self.group_name = group_name
        self.launch_hook_name = f"{group_name}-launching"
        self.termination_hook_name = f"{group_name}-terminating"
        self.log_group = logs.LogGroup(
            self,
            "WorkerLogs",
            retention=_retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "WorkerSecurityGroup",
            vpc=network.vpc,
            description="stagehub GPU workers: no inbound traffic; outbound HTTPS to AWS endpoints only",
            allow_all_outbound=False,
        )
        # The worker talks only to AWS APIs (SQS, S3, DynamoDB, CloudWatch, Auto Scaling, Logs, SSM), all HTTPS;
        # DNS and the time service are the VPC's link-local resolvers, which security groups do not filter.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS service endpoints")
        self.user_data = ec2.UserData.for_linux()

    def build(self, role: iam.IRole) -> None:
        """The launch template and the group, once the role exists (it needs the group's name and log group)."""
        config = self._config
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=machine_image(config),
            instance_type=ec2.InstanceType(config.gpu_instance_type),
            role=role,
            security_group=self.security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            instance_metadata_tags=False,
            user_data=self.user_data,
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
            vpc=self._network.vpc,
            vpc_subnets=self._network.worker_subnets,
            launch_template=self.launch_template,
            min_capacity=config.min_gpu_instances,
            max_capacity=config.max_gpu_instances,
            group_metrics=[autoscaling.GroupMetrics.all()],
            default_instance_warmup=cdk.Duration.seconds(INSTANCE_WARMUP_S),
            health_checks=autoscaling.HealthChecks.ec2(grace_period=cdk.Duration.seconds(0)),
            capacity_rebalance=False,
        )
        self.group.add_lifecycle_hook(
            "LaunchHook",
            lifecycle_hook_name=self.launch_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=cdk.Duration.seconds(config.ready_timeout_s + HOOK_MARGIN_S),
            default_result=autoscaling.DefaultResult.ABANDON,
        )
        self.group.add_lifecycle_hook(
            "TerminationHook",
            lifecycle_hook_name=self.termination_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=cdk.Duration.seconds(config.termination_grace_s),
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        if config.warm_pool:
            # Scaled-in instances go back to the pool, stopped, with the worker installed and its models on disk.
            self.group.add_warm_pool(min_size=0, pool_state=autoscaling.PoolState.STOPPED, reuse_on_scale_in=True)
        nag.acknowledge(
            self.group,
            "AS3",
            "failed launches and replacements are sent to the alarm topic (EventBridge rules on this group's "
            "events); routine scaling is graphed on the dashboard instead of paging ops",
        )
        self.refresh = self._rollout()

    def _rollout(self) -> cr.AwsCustomResource:
        """An instance refresh on every deploy that makes a new launch template version (none on create)."""
        stack = cdk.Stack.of(self)
        group_arn = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{self.group_name}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        physical_id = cr.PhysicalResourceId.of(f"{self.group_name}-refresh")
        refresh = cr.AwsCustomResource(
            self,
            "InstanceRefresh",
            # A new group has nothing to refresh: on create, only a read (AwsCustomResource would repeat on_update).
            on_create=cr.AwsSdkCall(
                service="AutoScaling",
                action="describeInstanceRefreshes",
                parameters={"AutoScalingGroupName": self.group_name, "MaxRecords": 1},
                physical_resource_id=physical_id,
            ),
            on_update=cr.AwsSdkCall(
                service="AutoScaling",
                action="startInstanceRefresh",
                parameters={
                    "AutoScalingGroupName": self.group_name,
                    "Strategy": "Rolling",
                    # The new version is what the refresh rolls out; it changes on each new version, so CloudFormation
                    # calls this again exactly then.
                    "DesiredConfiguration": {
                        "LaunchTemplate": {
                            "LaunchTemplateId": self.launch_template.launch_template_id,
                            "Version": self.launch_template.latest_version_number,
                        }
                    },
                    "Preferences": {
                        "MinHealthyPercentage": 100,  # launch the new instance first
                        "MaxHealthyPercentage": 200,
                        "InstanceWarmup": INSTANCE_WARMUP_S,
                        "SkipMatching": True,
                        "ScaleInProtectedInstances": "Wait",  # a busy worker finishes first
                        "StandbyInstances": "Wait",
                    },
                },
                physical_resource_id=physical_id,
                # A refresh still running keeps going (the next deploy rolls out the newer version).
                ignore_error_codes_matching="InstanceRefreshInProgress",
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [
                    iam.PolicyStatement(actions=["autoscaling:StartInstanceRefresh"], resources=[group_arn]),
                    iam.PolicyStatement(actions=["autoscaling:DescribeInstanceRefreshes"], resources=["*"]),
                ]
            ),
            install_latest_aws_sdk=False,
        )
        refresh.node.add_dependency(self.group)
        nag.acknowledge(
            refresh, "IAM5", "DescribeInstanceRefreshes has no resource-level permissions (read only)", "Resource::*"
        )
        provider = stack.node.try_find_child("AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", ""))
        if provider is not None:
            nag.acknowledge(
                provider,
                "IAM4",
                "CDK's provider function of AwsCustomResource logs with AWSLambdaBasicExecutionRole (CloudWatch Logs "
                "writes only); it runs only during deploys",
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            )
        nag.acknowledge_resource(
            refresh,
            group_arn,
            "an Auto Scaling group's ARN holds a generated id; the group name pins it to this fleet's group",
        )
        return refresh

    def notify(self, topic: sns.ITopic) -> None:
        """Failed launches, and instances replaced (unhealthy, or a launch abandoned), to the alarm topic."""
        for rule_id, detail_type, detail in (
            ("LaunchFailed", "EC2 Instance Launch Unsuccessful", {}),
            ("TerminateFailed", "EC2 Instance Terminate Unsuccessful", {}),
            (
                "InstanceReplaced",
                "EC2 Instance Terminate Successful",
                {"Cause": events.Match.any_of(events.Match.wildcard("*health*"), events.Match.wildcard("*ABANDON*"))},
            ),
        ):
            events.Rule(
                self,
                rule_id,
                description=f"stagehub {self._config.stage}: {detail_type} in {self.group_name}",
                event_pattern=events.EventPattern(
                    source=["aws.autoscaling"],
                    detail_type=[detail_type],
                    detail={"AutoScalingGroupName": [self.group_name], **detail},
                ),
                targets=[targets.SnsTopic(topic)],
            )


def _retention(days: int) -> logs.RetentionDays:
    from infra.functions import retention_days

    return retention_days(days)
