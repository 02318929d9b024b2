"""Scaling of one backend's group on its real backlog, and the starter that sizes every group within a minute.

backlog per instance = (visible + in flight) ÷ in-service instances of the in-queue; a worker process holds up to
a batch plus its prefetch in flight, which is work waiting for the fleet all the same. Its target is
`queueLatencyGoalSeconds ÷ executionSeconds` (docs/ops.md has the maths).

- Scale-out: target tracking on that ratio (scale-in disabled), and the fleet starter (`FleetStarter`): an
  EventBridge schedule that every minute reads the queues' live counts and raises each group's desired capacity
  to ceil(backlog ÷ target). CloudWatch's SQS metrics come minutes late and target tracking's alarms need three
  of them, so from zero the starter is what starts the first instance, within a minute of the first submission.
- Scale-in: after `scaleInIdleMinutes` with no backlog at all, the group goes to its minimum; after as many with
  the backlog per instance under half the target, one instance fewer per minute. Busy instances are protected
  from scale-in by their worker (gpu_worker/fleet.py), so only idle ones go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import nag
from infra.config import StagehubConfig
from infra.functions import retention_days
from infra.packaging import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, function_code
from infra.queues import QueuePair

if TYPE_CHECKING:
    from infra.gpu_fleet import GpuFleet

METRIC_PERIOD_S = 60
STARTER_RATE_MINUTES = 1  # EventBridge's shortest schedule
STARTER_HANDLER = "functions.fleet.handler.lambda_handler"


class FleetScaling(Construct):
    """The scaling policies and alarms of one group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        group: autoscaling.AutoScalingGroup,
        group_name: str,
        in_queue: QueuePair,
        warmup_s: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._group = group
        self._group_name = group_name
        self._queue_name = in_queue.queue.queue_name
        self.target = config.backlog_target_per_instance
        self.target_tracking = self._target_tracking(warmup_s)
        self.idle_alarm, self.shrink_alarm = self._scale_in()

    # --- metrics ---

    def _queue_metric(self, name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/SQS",
            metric_name=name,
            dimensions_map={"QueueName": self._queue_name},
            statistic="Maximum",
            period=cdk.Duration.seconds(METRIC_PERIOD_S),
        )

    def _in_service(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/AutoScaling",
            metric_name="GroupInServiceInstances",
            dimensions_map={"AutoScalingGroupName": self._group_name},
            statistic="Maximum",
            period=cdk.Duration.seconds(METRIC_PERIOD_S),
        )

    def backlog(self) -> cloudwatch.MathExpression:
        return cloudwatch.MathExpression(
            expression="visible + inflight",
            using_metrics={
                "visible": self._queue_metric("ApproximateNumberOfMessagesVisible"),
                "inflight": self._queue_metric("ApproximateNumberOfMessagesNotVisible"),
            },
            label="In-queue backlog (visible + in flight)",
            period=cdk.Duration.seconds(METRIC_PERIOD_S),
        )

    # --- policies ---

    def _target_tracking(self, warmup_s: int) -> autoscaling.CfnScalingPolicy:
        """Backlog per instance = (visible + in flight) / in-service instances, held at the target (scale-out only)."""
        policy = autoscaling.CfnScalingPolicy

        def stat(
            metric_id: str, namespace: str, name: str, dimension: str, value: str
        ) -> autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty:
            return policy.TargetTrackingMetricDataQueryProperty(
                id=metric_id,
                return_data=False,
                metric_stat=policy.TargetTrackingMetricStatProperty(
                    stat="Sum" if namespace == "AWS/SQS" else "Average",
                    metric=policy.MetricProperty(
                        namespace=namespace,
                        metric_name=name,
                        dimensions=[policy.MetricDimensionProperty(name=dimension, value=value)],
                    ),
                ),
            )

        return policy(
            self,
            "BacklogPerInstance",
            auto_scaling_group_name=self._group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=warmup_s,
            target_tracking_configuration=policy.TargetTrackingConfigurationProperty(
                target_value=self.target,
                disable_scale_in=True,  # scale-in: the idle alarms below, after scaleInIdleMinutes
                customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        stat("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", self._queue_name),
                        stat(
                            "inflight",
                            "AWS/SQS",
                            "ApproximateNumberOfMessagesNotVisible",
                            "QueueName",
                            self._queue_name,
                        ),
                        stat(
                            "inservice",
                            "AWS/AutoScaling",
                            "GroupInServiceInstances",
                            "AutoScalingGroupName",
                            self._group_name,
                        ),
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="backlogPerInstance",
                            label="In-queue backlog (visible + in flight) per in-service instance",
                            expression="(visible + inflight) / inservice",
                            return_data=True,
                        ),
                    ]
                ),
            ),
        )

    def _scale_in(self) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
        minutes = self._config.scale_in_idle_minutes
        to_minimum = autoscaling.StepScalingAction(
            self,
            "ScaleInWhenIdle",
            auto_scaling_group=self._group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
        )
        to_minimum.add_adjustment(adjustment=self._config.min_gpu_instances, upper_bound=0)
        idle = cloudwatch.Alarm(
            self,
            "FleetIdle",
            alarm_description=f"stagehub {self._config.stage}: {self._group_name} has had no work for {minutes} min",
            metric=self.backlog(),
            threshold=0.5,
            evaluation_periods=minutes,
            datapoints_to_alarm=minutes,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,  # SQS stops reporting an idle queue
        )
        idle.add_alarm_action(cw_actions.AutoScalingAction(to_minimum))
        one_fewer = autoscaling.StepScalingAction(
            self,
            "ScaleInWhenUnderTarget",
            auto_scaling_group=self._group,
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
        )
        one_fewer.add_adjustment(adjustment=-1, upper_bound=0)
        per_instance = cloudwatch.MathExpression(
            expression="(visible + inflight) / MAX([inservice, 1])",
            using_metrics={
                "visible": self._queue_metric("ApproximateNumberOfMessagesVisible"),
                "inflight": self._queue_metric("ApproximateNumberOfMessagesNotVisible"),
                "inservice": self._in_service(),
            },
            label="Backlog per in-service instance",
            period=cdk.Duration.seconds(METRIC_PERIOD_S),
        )
        shrink = cloudwatch.Alarm(
            self,
            "BacklogUnderTarget",
            alarm_description=(
                f"stagehub {self._config.stage}: {self._group_name} backlog per instance under half its target "
                f"({self.target}) for {minutes} min"
            ),
            metric=per_instance,
            threshold=self.target / 2,
            evaluation_periods=minutes,
            datapoints_to_alarm=minutes,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        shrink.add_alarm_action(cw_actions.AutoScalingAction(one_fewer))
        return idle, shrink


class FleetStarter(Construct):
    """One scheduled function for every fleet of the stage: sizes each group to its live backlog every minute."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StagehubConfig, fleets: Sequence[GpuFleet]
    ) -> None:
        super().__init__(scope, construct_id)
        log_group = logs.LogGroup(
            self, "Logs", retention=retention_days(config.log_retention_days), removal_policy=cdk.RemovalPolicy.DESTROY
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"stagehub {config.stage}: the fleet starter",
        )
        log_group.grant_write(role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=STARTER_HANDLER,
            code=function_code(),
            role=role,
            log_group=log_group,
            timeout=cdk.Duration.seconds(30),
            memory_size=256,
            description=f"stagehub {config.stage}: starts GPU instances for queued work within a minute",
        )
        nag.acknowledge_runtime(self.function, LAMBDA_RUNTIME.name)
        stack = cdk.Stack.of(self)
        for fleet in fleets:
            fleet.in_queue.queue.grant(role, "sqs:GetQueueAttributes")
        groups = [
            stack.format_arn(
                service="autoscaling",
                resource="autoScalingGroup",
                resource_name=f"*:autoScalingGroupName/{fleet.group_name}",
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )
            for fleet in fleets
        ]
        role.add_to_policy(iam.PolicyStatement(actions=["autoscaling:SetDesiredCapacity"], resources=groups))
        for group_arn in groups:
            nag.acknowledge_resource(
                role, group_arn, "an Auto Scaling group's ARN holds a generated id; the name pins it to a fleet's group"
            )
        role.add_to_policy(iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingGroups"], resources=["*"]))
        nag.acknowledge(
            role, "IAM5", "DescribeAutoScalingGroups has no resource-level permissions (read only)", "Resource::*"
        )
        self.rule = events.Rule(
            self,
            "Schedule",
            description=f"stagehub {config.stage}: size the GPU fleets to their backlog",
            schedule=events.Schedule.rate(cdk.Duration.minutes(STARTER_RATE_MINUTES)),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    event=events.RuleTargetInput.from_object(
                        {
                            "fleets": [
                                {
                                    "queueUrl": fleet.in_queue.queue.queue_url,
                                    "groupName": fleet.group_name,
                                    "backlogTarget": fleet.scaling.target,
                                }
                                for fleet in fleets
                            ]
                        }
                    ),
                    retry_attempts=0,  # the next minute's run is the retry
                )
            ],
        )
