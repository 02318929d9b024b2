"""One CloudWatch dashboard and the alarms that page ops, through one encrypted SNS topic.

Graphs: API requests/latency/4xx/5xx; errors, duration and throttles of every function; depth and age of the
oldest message of every queue; DLQ depth; executions by outcome (shared.telemetry names, namespace NAMESPACE,
dimension Stage plus Powertools' `service`); the worker's stage duration and GPU utilisation/memory; fleet size.
Alarms: every DLQ not empty, in-queue/out-queue oldest message too old, API 5xx rate, each function's errors.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import StagehubConfig
from infra.functions import SERVICE_NAME, Functions
from infra.gpu_fleet import GpuFleet
from infra.queues import QueuePair, Queues
from shared import telemetry

PERIOD = cdk.Duration.minutes(5)
API_5XX_RATE_THRESHOLD = 0.05  # 5% of requests over 5 minutes
WIDTH = 8  # three graphs per dashboard row (24 columns)

EXECUTION_OUTCOMES = (
    telemetry.EXECUTIONS_SUBMITTED,
    telemetry.EXECUTIONS_STARTED,
    telemetry.EXECUTIONS_SUCCEEDED,
    telemetry.EXECUTIONS_FAILED,
    telemetry.EXECUTIONS_CANCELLED,
    telemetry.EXECUTIONS_DEAD_LETTERED,
)


class Monitoring(Construct):
    """The stage's dashboard, alarms and alarm topic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        rest_api: apigw.RestApi,
        functions: Functions,
        queues: Queues,
        fleets: list[GpuFleet],
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"stagehub {config.stage}: encrypts the alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes alarms to the topic, so it must be able to use the topic's key.
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        # EventBridge sends the GPU fleets' launch failures and replacements there too (infra/gpu_fleet/group.py).
        key.grant(iam.ServicePrincipal("events.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(
            self, "AlarmTopic", display_name=f"stagehub {config.stage} alarms", master_key=key, enforce_ssl=True
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarm_action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []
        self._queue_alarms(queues)
        self._webhook_alarms(queues)
        self._api_alarms(rest_api)
        self._function_alarms(functions)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"stagehub-{config.stage}",
            default_interval=cdk.Duration.hours(3),
        )
        self._api_widgets(rest_api)
        self._function_widgets(functions)
        self._queue_widgets(queues)
        self._execution_widgets()
        self._fleet_widgets(fleets)
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24))

    # --- alarms ---

    def _alarm(self, construct_id: str, description: str, **props: object) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=f"stagehub {self._config.stage}: {description}",
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            **props,  # type: ignore[arg-type]
        )
        alarm.add_alarm_action(self.alarm_action)
        self.alarms.append(alarm)
        return alarm

    def _queue_alarms(self, queues: Queues) -> None:
        for name, pair in self._queue_pairs(queues):
            self._alarm(
                f"{name}DlqNotEmpty",
                f"the {name} dead-letter queue holds messages (executions that could not be processed)",
                metric=pair.dlq.metric_approximate_number_of_messages_visible(
                    period=cdk.Duration.minutes(1), statistic="Maximum"
                ),
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
            )
            self._alarm(
                f"{name}OldestMessage",
                f"the oldest message of the {name} queue has waited over {self._config.oldest_message_alarm_s} s",
                metric=pair.queue.metric_approximate_age_of_oldest_message(
                    period=cdk.Duration.minutes(1), statistic="Maximum"
                ),
                threshold=self._config.oldest_message_alarm_s,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=5,
            )

    def _webhook_alarms(self, queues: Queues) -> None:
        """Webhook events whose retries ran out (or that broke the sender) wait in the webhook DLQ. No oldest-
        message alarm: retries wait in the queue on purpose, for up to 15 minutes a hop."""
        self._alarm(
            "WebhooksDlqNotEmpty",
            "the webhooks dead-letter queue holds events no receiver accepted within the retry schedule",
            metric=queues.webhooks.dlq.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(1), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
        )

    def _api_alarms(self, rest_api: apigw.RestApi) -> None:
        rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, errors / requests, 0)",
            using_metrics={
                "errors": rest_api.metric_server_error(period=PERIOD, statistic="Sum"),
                "requests": rest_api.metric_count(period=PERIOD, statistic="Sum"),
            },
            label="5xx rate",
            period=PERIOD,
        )
        self._alarm(
            "Api5xxRate",
            f"over {API_5XX_RATE_THRESHOLD:.0%} of API requests answered 5xx",
            metric=rate,
            threshold=API_5XX_RATE_THRESHOLD,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
        )

    def _function_alarms(self, functions: Functions) -> None:
        for name, function in functions.functions.items():
            self._alarm(
                f"{name.capitalize()}Errors",
                f"the {name} function raised errors (unhandled exceptions or timeouts)",
                metric=function.metric_errors(period=PERIOD, statistic="Sum"),
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
            )

    # --- dashboard ---

    def _api_widgets(self, rest_api: apigw.RestApi) -> None:
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=f"# stagehub {self._config.stage}\nAPI, functions, queues, executions, "
                "GPU fleet. Alarms at the bottom.",
                width=24,
                height=2,
            ),
            cloudwatch.GraphWidget(
                title="API requests", width=WIDTH, left=[rest_api.metric_count(period=PERIOD, statistic="Sum")]
            ),
            cloudwatch.GraphWidget(
                title="API latency",
                width=WIDTH,
                left=[rest_api.metric_latency(period=PERIOD, statistic=stat) for stat in ("p50", "p90", "p99")],
            ),
            cloudwatch.GraphWidget(
                title="API errors",
                width=WIDTH,
                left=[
                    rest_api.metric_client_error(period=PERIOD, statistic="Sum"),
                    rest_api.metric_server_error(period=PERIOD, statistic="Sum"),
                ],
            ),
        )

    def _function_widgets(self, functions: Functions) -> None:
        items = functions.functions.items()
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Function errors",
                width=WIDTH,
                left=[fn.metric_errors(period=PERIOD, statistic="Sum", label=name) for name, fn in items],
            ),
            cloudwatch.GraphWidget(
                title="Function duration (p90)",
                width=WIDTH,
                left=[fn.metric_duration(period=PERIOD, statistic="p90", label=name) for name, fn in items],
            ),
            cloudwatch.GraphWidget(
                title="Function throttles",
                width=WIDTH,
                left=[fn.metric_throttles(period=PERIOD, statistic="Sum", label=name) for name, fn in items],
            ),
        )

    def _queue_widgets(self, queues: Queues) -> None:
        pairs = list(self._queue_pairs(queues))
        pairs.append(("Webhooks", queues.webhooks))
        minute = cdk.Duration.minutes(1)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Queue depth (visible / in flight)",
                width=WIDTH,
                left=[
                    p.queue.metric_approximate_number_of_messages_visible(
                        period=minute, statistic="Maximum", label=f"{n} visible"
                    )
                    for n, p in pairs
                ]
                + [
                    p.queue.metric_approximate_number_of_messages_not_visible(
                        period=minute, statistic="Maximum", label=f"{n} in flight"
                    )
                    for n, p in pairs
                ],
            ),
            cloudwatch.GraphWidget(
                title="Age of oldest message (s)",
                width=WIDTH,
                left=[
                    p.queue.metric_approximate_age_of_oldest_message(period=minute, statistic="Maximum", label=n)
                    for n, p in pairs
                ],
            ),
            cloudwatch.GraphWidget(
                title="Dead-letter queue depth",
                width=WIDTH,
                left=[
                    p.dlq.metric_approximate_number_of_messages_visible(
                        period=minute, statistic="Maximum", label=f"{n} DLQ"
                    )
                    for n, p in pairs
                ],
            ),
        )

    def _execution_metric(self, name: str) -> cloudwatch.Metric:
        """A metric the functions emit with Powertools (EMF): dimensions Stage and Powertools' `service`."""
        return cloudwatch.Metric(
            namespace=telemetry.NAMESPACE,
            metric_name=name,
            dimensions_map={telemetry.DIM_STAGE: self._config.stage, "service": SERVICE_NAME},
            statistic="Sum",
            period=PERIOD,
            label=name,
        )

    def _worker_search(self, metric_name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
        """The worker's metrics carry more dimensions (Backend, StageType, ...): a search finds them all."""
        query = (
            f'SEARCH(\'Namespace="{telemetry.NAMESPACE}" MetricName="{metric_name}" '
            f"{telemetry.DIM_STAGE}=\"{self._config.stage}\"', '{statistic}', 300)"
        )
        return cloudwatch.MathExpression(expression=query, label=label, period=PERIOD, using_metrics={})

    def _execution_widgets(self) -> None:
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executions", width=WIDTH, left=[self._execution_metric(name) for name in EXECUTION_OUTCOMES]
            ),
            cloudwatch.GraphWidget(
                title="Stage duration (ms, p90)",
                width=WIDTH,
                left=[self._worker_search(telemetry.STAGE_DURATION_MS, "p90", "stage duration")],
            ),
            cloudwatch.GraphWidget(
                title="Batch size",
                width=WIDTH,
                left=[self._worker_search(telemetry.BATCH_SIZE, "Average", "batch size")],
            ),
        )

    def _fleet_widgets(self, fleets: list[GpuFleet]) -> None:
        fleet_size = []
        for fleet in fleets:
            for metric in ("GroupDesiredCapacity", "GroupInServiceInstances"):
                fleet_size.append(
                    cloudwatch.Metric(
                        namespace="AWS/AutoScaling",
                        metric_name=metric,
                        dimensions_map={"AutoScalingGroupName": fleet.group_name},
                        statistic="Maximum",
                        period=cdk.Duration.minutes(1),
                        label=f"{fleet.backend} {metric.removeprefix('Group')}",
                    )
                )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="GPU utilisation (%)",
                width=WIDTH,
                left=[self._worker_search(telemetry.GPU_UTILIZATION, "Average", "GPU utilisation")],
            ),
            cloudwatch.GraphWidget(
                title="GPU memory used (%)",
                width=WIDTH,
                left=[self._worker_search(telemetry.GPU_MEMORY_USED, "Maximum", "GPU memory")],
            ),
            cloudwatch.GraphWidget(title="Fleet size", width=WIDTH, left=fleet_size),
        )

    @staticmethod
    def _queue_pairs(queues: Queues) -> list[tuple[str, QueuePair]]:
        pairs = [(_pascal(backend) + "In", pair) for backend, pair in queues.in_queues.items()]
        pairs.append(("Out", queues.out))
        return pairs


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
