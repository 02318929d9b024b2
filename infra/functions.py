"""The Lambda functions: one per entry of `functions.routes.API_FUNCTIONS`, the authorizer and the two queue
consumers, each with its own role holding only the grants it needs.

Handlers are referenced by string ("functions.auth.handler.lambda_handler"); the app never imports them.
Every function gets the names of every resource (Settings needs them all to validate), the JWT secret's ARN
only where it may read it, and Powertools' settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from functions import routes
from infra import nag, permissions
from infra.config import StagehubConfig
from infra.data import Data
from infra.packaging import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, dependency_layer_code, function_code
from infra.queues import DLQ_VISIBILITY_S, Queues
from shared import resources as res
from shared import telemetry

SERVICE_NAME = "stagehub"
HANDLER_ENTRY = "lambda_handler"
API_TIMEOUT_S = 29  # API Gateway's integration timeout
# AWS asks for a queue visibility timeout of at least six times the consumer's timeout (out-queue and DLQs).
CONSUMER_TIMEOUT_S = min(res.OUT_QUEUE_VISIBILITY_S, DLQ_VISIBILITY_S) // 6
CONSUMER_BATCH_SIZE = 10
AUTHORIZER = "authorizer"
RESULTS_CONSUMER = "results"
DLQ_HANDLER = "dlq"
WEBHOOK_SENDER = "webhooksender"
# One delivery attempt is at most 10 s (plus DNS and the log write); the webhook queue's visibility is 6x this.
WEBHOOK_SENDER_TIMEOUT_S = res.WEBHOOK_QUEUE_VISIBILITY_S // 6
WEBHOOK_SENDER_BATCH_SIZE = 1  # attempts are independent: a slow receiver holds back no other event
SWEEP = "sweep"
SWEEP_TIMEOUT_S = 60
SWEEP_RATE_MINUTES = 1
# Password hashing (argon2id) is memory-hard: the auth function gets more memory (and so more CPU).
MEMORY_MB = {"auth": 1024}
DEFAULT_MEMORY_MB = 512


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    module: str
    timeout_s: int
    reads_secret: bool = False


def function_specs() -> list[FunctionSpec]:
    specs = [
        FunctionSpec(name, module, API_TIMEOUT_S, reads_secret=permissions.reads_secret(name))
        for name, module in routes.API_FUNCTIONS.items()
    ]
    specs.append(
        FunctionSpec(AUTHORIZER, routes.AUTHORIZER_MODULE, 10, reads_secret=permissions.reads_secret(AUTHORIZER))
    )
    specs.append(FunctionSpec(RESULTS_CONSUMER, routes.RESULTS_CONSUMER_MODULE, CONSUMER_TIMEOUT_S))
    specs.append(FunctionSpec(DLQ_HANDLER, routes.DLQ_HANDLER_MODULE, CONSUMER_TIMEOUT_S))
    specs.append(FunctionSpec(WEBHOOK_SENDER, routes.WEBHOOK_SENDER_MODULE, WEBHOOK_SENDER_TIMEOUT_S))
    specs.append(FunctionSpec(SWEEP, routes.SWEEP_MODULE, SWEEP_TIMEOUT_S))
    return specs


class Functions(Construct):
    """Every Lambda function of the stage, by name (API function names, "authorizer", "results", "dlq")."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StagehubConfig, data: Data, queues: Queues
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.jwt_secret = secretsmanager.Secret(
            self,
            "JwtSecret",
            description=f"stagehub {config.stage}: HS256 signing key of access tokens",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
            removal_policy=cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY,
        )
        nag.acknowledge(
            self.jwt_secret,
            "SMG4",
            "rotating the signing key invalidates every access token at once (clients must refresh); rotation is "
            "a manual, announced step (docs/ops.md) rather than an automatic one",
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=dependency_layer_code(config.skip_layer_build),
            compatible_runtimes=[LAMBDA_RUNTIME],
            compatible_architectures=[LAMBDA_ARCHITECTURE],
            description="stagehub Lambda dependencies (functions/requirements.txt), built with pip for arm64",
        )
        code = function_code()
        environment = self._environment(data, queues)
        self.functions: dict[str, lambda_.Function] = {}
        for spec in function_specs():
            self.functions[spec.name] = self._function(spec, code, environment)
        self._grant(data, queues)
        self._consume(queues)
        self._consume_webhooks(queues)
        self._schedule_sweep()

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.functions[name]

    def _role(self, name: str) -> iam.IRole:
        role = self.functions[name].role
        assert role is not None  # every function gets its own role (_function)
        return role

    def _environment(self, data: Data, queues: Queues) -> dict[str, str]:
        stack = cdk.Stack.of(self)
        env = {
            "STAGE": self._config.stage,
            "MODELS": self._config.models_json(),
            "DEFAULT_MODELS": self._config.default_models_json(),
            "METRICS_NAMESPACE": telemetry.NAMESPACE,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": telemetry.NAMESPACE,
            "LOG_LEVEL": "INFO",
            "TRACING": "true",  # the functions trace with X-Ray (tracing=ACTIVE); off elsewhere, no X-Ray clients
            # {"<backend>": "<queue url>"}: JSON whose values CloudFormation fills in at deploy time.
            res.BACKEND_QUEUES_ENV_VAR: stack.to_json_string(
                {backend: pair.queue.queue_url for backend, pair in queues.in_queues.items()}
            ),
            res.BACKEND_DLQS_ENV_VAR: stack.to_json_string(
                {backend: pair.dlq.queue_url for backend, pair in queues.in_queues.items()}
            ),
            res.OUT_QUEUE.env_var: queues.out.queue.queue_url,
        }
        # Login and registration throttling (API.md "Login throttling"), read by the auth function's settings.
        env |= {
            "LOGIN_FAILURES_PER_EMAIL": str(self._config.login_failures_per_email),
            "LOGIN_FAILURE_WINDOW_S": str(self._config.login_failure_window_s),
            "LOGIN_FAILURES_PER_ADDRESS": str(self._config.login_failures_per_address),
            "REGISTRATIONS_PER_ADDRESS": str(self._config.registrations_per_address),
        }
        env.update(self._config.admission_environment())
        if res.OUT_QUEUE.dlq_env_var:
            env[res.OUT_QUEUE.dlq_env_var] = queues.out.dlq.queue_url
        env[res.WEBHOOK_QUEUE.env_var] = queues.webhooks.queue.queue_url
        env[str(res.WEBHOOK_QUEUE.dlq_env_var)] = queues.webhooks.dlq.queue_url
        for spec in res.TABLES:
            env[spec.env_var] = data.table(spec).table_name
        for bucket in res.BUCKETS:
            env[bucket.env_var] = data.bucket(bucket).bucket_name
        return env

    def _function(self, spec: FunctionSpec, code: lambda_.Code, environment: dict[str, str]) -> lambda_.Function:
        construct_id = spec.name.capitalize()
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            retention=retention_days(self._config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"stagehub {self._config.stage}: the {spec.name} function",
        )
        log_group.grant_write(role)
        env = dict(environment)
        if spec.reads_secret:
            env["JWT_SECRET_ARN"] = self.jwt_secret.secret_arn
        function = lambda_.Function(
            self,
            construct_id,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=f"{spec.module}.{HANDLER_ENTRY}",
            code=code,
            layers=[self.layer],
            role=role,
            log_group=log_group,
            timeout=cdk.Duration.seconds(spec.timeout_s),
            memory_size=MEMORY_MB.get(spec.name, DEFAULT_MEMORY_MB),
            tracing=lambda_.Tracing.ACTIVE,
            environment=env,
            description=f"stagehub {self._config.stage}: {spec.module}",
        )
        nag.acknowledge_tracing(role)
        nag.acknowledge_runtime(function, LAMBDA_RUNTIME.name)
        return function

    def _grant(self, data: Data, queues: Queues) -> None:
        """Least privilege, function by function: exactly the calls `infra.permissions` declares."""
        for name, accesses in permissions.FUNCTION_ACCESS.items():
            role = self._role(name)
            for access in accesses:
                self._grant_one(role, access, data, queues)

    def _consume_webhooks(self, queues: Queues) -> None:
        self[WEBHOOK_SENDER].add_event_source(
            sources.SqsEventSource(
                queues.webhooks.queue, batch_size=WEBHOOK_SENDER_BATCH_SIZE, report_batch_item_failures=True
            )
        )

    def _schedule_sweep(self) -> None:
        """The admission sweep every minute (functions/sweep)."""
        events.Rule(
            self,
            "SweepSchedule",
            description=f"stagehub {self._config.stage}: admit what a lost event left waiting, time out waiters",
            schedule=events.Schedule.rate(cdk.Duration.minutes(SWEEP_RATE_MINUTES)),
            targets=[targets.LambdaFunction(self[SWEEP], retry_attempts=0)],
        )

    def _grant_one(self, role: iam.IRole, access: permissions.Access, data: Data, queues: Queues) -> None:
        if isinstance(access, permissions.SecretAccess):
            self._allow(role, "secretsmanager", access.actions, [self.jwt_secret.secret_arn])
        elif isinstance(access, permissions.TableAccess):
            table = data.table(access.table)
            self._allow(role, "dynamodb", access.actions, [table.table_arn])
            if access.index_actions:
                self._allow(role, "dynamodb", access.index_actions, [f"{table.table_arn}/index/*"])
                nag.acknowledge_indexes(role, table)
        elif isinstance(access, permissions.MetricsReadAccess):
            self._allow(role, "cloudwatch", access.actions, ["*"])  # Resource '*' acknowledged on every role
        elif isinstance(access, permissions.BucketAccess):
            bucket = data.bucket(access.bucket)
            self._allow(role, "s3", access.object_actions, [bucket.arn_for_objects("*")])
            self._allow(role, "s3", access.bucket_actions, [bucket.bucket_arn])
            nag.acknowledge_objects(
                role,
                bucket,
                f"objects of the {access.bucket.logical_id} bucket only; keys (per user, pipeline or execution) "
                "are chosen at run time",
            )
        else:
            self._allow(role, "sqs", access.actions, _queue_arns(queues, access.queues))

    @staticmethod
    def _allow(role: iam.IRole, service: str, actions: tuple[str, ...], resources: list[str]) -> None:
        if actions:
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=[f"{service}:{action}" for action in actions], resources=resources)
            )

    def _consume(self, queues: Queues) -> None:
        """The results consumer reads the out-queue; the DLQ handler every in-queue's dead letters."""
        self[RESULTS_CONSUMER].add_event_source(
            sources.SqsEventSource(
                queues.out.queue,
                batch_size=CONSUMER_BATCH_SIZE,
                report_batch_item_failures=True,
            )
        )
        for pair in queues.in_queues.values():
            self[DLQ_HANDLER].add_event_source(
                sources.SqsEventSource(pair.dlq, batch_size=CONSUMER_BATCH_SIZE, report_batch_item_failures=True)
            )


def _queue_arns(queues: Queues, which: permissions.Queues) -> list[str]:
    if which is permissions.Queues.OUT:
        return [queues.out.queue.queue_arn]
    if which is permissions.Queues.IN_DLQ:
        return [pair.dlq.queue_arn for pair in queues.in_queues.values()]
    if which is permissions.Queues.WEBHOOKS:
        return [queues.webhooks.queue.queue_arn]
    if which is permissions.Queues.WEBHOOKS_DLQ:
        return [queues.webhooks.dlq.queue_arn]
    return [pair.queue.queue_arn for pair in queues.in_queues.values()]


_RETENTION_NAMES = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
}


def retention_days(days: int) -> logs.RetentionDays:
    """CloudWatch Logs accepts only some retention periods: the configured one, or one month."""
    return getattr(logs.RetentionDays, _RETENTION_NAMES.get(days, "ONE_MONTH"))
