"""The GPU instances' role: its own queue, buckets and table, its own asset objects, its own group and logs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from infra import nag
from infra.config import StagehubConfig
from infra.data import Data
from infra.queues import QueuePair, Queues
from shared import resources as res
from shared import telemetry


class InstanceRole(Construct):
    """`role`: what one backend's workers may do, each grant on a named resource (wildcards acknowledged)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        backend: str,
        group_name: str,
        in_queue: QueuePair,
        data: Data,
        queues: Queues,
        assets: list[s3_assets.Asset],
        log_group: logs.ILogGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"stagehub {config.stage}: GPU workers of backend {backend}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        nag.acknowledge(
            self.role,
            "IAM4",
            "AmazonSSMManagedInstanceCore is AWS's policy for Session Manager, the only way into the instances "
            "(no SSH, no inbound rules)",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore",
        )
        self._work(in_queue, data, queues)
        self._assets(assets)
        self._group_and_logs(group_name, log_group)
        self._model_sources()

    def _work(self, in_queue: QueuePair, data: Data, queues: Queues) -> None:
        role = self.role
        in_queue.queue.grant_consume_messages(role)
        queues.out.queue.grant_send_messages(role)
        data.bucket(res.RESULTS_BUCKET).grant_read_write(role)
        data.bucket(res.UPLOADS_BUCKET).grant_read(role)
        data.bucket(res.PIPELINES_BUCKET).grant_read(role)
        data.table(res.EXECUTIONS).grant_read_data(role)  # cancel checks between stages
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

    def _assets(self, assets: list[s3_assets.Asset]) -> None:
        """The worker's own asset objects (code, wheels), by key: nothing else in the CDK bootstrap bucket."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnWorkerAssets",
                actions=["s3:GetObject"],
                resources=[asset.bucket.arn_for_objects(asset.s3_object_key) for asset in assets],
            )
        )

    def _group_and_logs(self, group_name: str, log_group: logs.ILogGroup) -> None:
        own_group = cdk.Stack.of(self).format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{group_name}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnInstanceInItsGroup",
                actions=[
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:SetInstanceHealth",
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:RecordLifecycleActionHeartbeat",
                ],
                resources=[own_group],
            )
        )
        nag.acknowledge_resource(
            self.role,
            own_group,
            "an Auto Scaling group's ARN holds a generated id; the group name pins it to this fleet's group",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WorkerLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_group.log_group_arn],
            )
        )

    def _model_sources(self) -> None:
        """Read access to the S3 prefixes that model and LoRA sources name (s3://bucket/prefix/), nothing more."""
        for name, model in sorted(self._config.models.items()):
            sources = {name: model.source} | {f"{name}-lora-{lora}": uri for lora, uri in sorted(model.loras.items())}
            for source_name, uri in sources.items():
                if uri.startswith("s3://"):
                    self._read_prefix(source_name, uri)

    def _read_prefix(self, name: str, uri: str) -> None:
        bucket_name, _, prefix = uri.removeprefix("s3://").partition("/")
        bucket = s3.Bucket.from_bucket_name(self, f"ModelSource{pascal(name)}", bucket_name)
        weights = bucket.arn_for_objects(f"{prefix}*")
        self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[weights]))
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        nag.acknowledge_resource(
            self.role, weights, f"the weights of {name}: every object under its configured S3 prefix"
        )


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").replace(".", "-").split("-"))
