"""The Lambda functions: one per entry of `functions.routes.API_FUNCTIONS`, the authorizer and the two queue
consumers, each with its own role holding only the grants it needs.

Handlers are referenced by string ("functions.auth.handler.lambda_handler"); the app never imports them.
Every function gets the names of every resource (Settings needs them all to validate), the JWT secret's ARN
only where it may read it, and Powertools' settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from functions import routes
from infra import nag
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
        FunctionSpec(name, module, API_TIMEOUT_S, reads_secret=(name == "auth"))
        for name, module in routes.API_FUNCTIONS.items()
    ]
    specs.append(FunctionSpec(AUTHORIZER, routes.AUTHORIZER_MODULE, 10, reads_secret=True))
    specs.append(FunctionSpec(RESULTS_CONSUMER, routes.RESULTS_CONSUMER_MODULE, CONSUMER_TIMEOUT_S))
    specs.append(FunctionSpec(DLQ_HANDLER, routes.DLQ_HANDLER_MODULE, CONSUMER_TIMEOUT_S))
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
        if res.OUT_QUEUE.dlq_env_var:
            env[res.OUT_QUEUE.dlq_env_var] = queues.out.dlq.queue_url
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
        if spec.reads_secret:
            self.jwt_secret.grant_read(role)
        nag.acknowledge_tracing(role)
        nag.acknowledge(
            function,
            "L1",
            f"{LAMBDA_RUNTIME.name}: the newest runtime whose Python the build byte-compiles the code and layer with "
            "(infra/packaging.py); a newer one would recompile every module on each cold start",
        )
        return function

    def _grant(self, data: Data, queues: Queues) -> None:
        """Least privilege, function by function."""
        table, bucket = data.table, data.bucket
        auth = self._role("auth")
        table(res.USERS).grant_read_write_data(auth)
        table(res.REFRESH_TOKENS).grant_read_write_data(auth)
        self._acknowledge_table_grants(auth, data, (res.USERS, res.REFRESH_TOKENS))

        pipelines = self._role("pipelines")
        for spec in (res.PIPELINES, res.RATINGS):
            table(spec).grant_read_write_data(pipelines)
        table(res.USERS).grant_read_data(pipelines)
        bucket(res.PIPELINES_BUCKET).grant_read_write(pipelines)
        bucket(res.UPLOADS_BUCKET).grant_read(pipelines)
        self._acknowledge_table_grants(pipelines, data, (res.PIPELINES, res.RATINGS, res.USERS))
        self._acknowledge_bucket_grants(
            pipelines, data, (res.PIPELINES_BUCKET, res.UPLOADS_BUCKET), nag.S3_READ_ACTIONS + nag.S3_WRITE_ACTIONS
        )

        uploads = self._role("uploads")
        bucket(res.UPLOADS_BUCKET).grant_put(uploads)
        self._acknowledge_bucket_grants(uploads, data, (res.UPLOADS_BUCKET,), nag.S3_PUT_ACTIONS)

        executions = self._role("executions")
        for spec in (res.EXECUTIONS, res.IDEMPOTENCY):
            table(spec).grant_read_write_data(executions)
        table(res.PIPELINES).grant_read_data(executions)
        bucket(res.PIPELINES_BUCKET).grant_read(executions)
        bucket(res.UPLOADS_BUCKET).grant_read(executions)
        bucket(res.RESULTS_BUCKET).grant_read_write(executions)
        bucket(res.RESULTS_BUCKET).grant_delete(executions)
        for pair in queues.in_queues.values():
            pair.queue.grant_send_messages(executions)
        self._acknowledge_table_grants(executions, data, (res.EXECUTIONS, res.IDEMPOTENCY, res.PIPELINES))
        self._acknowledge_bucket_grants(
            executions,
            data,
            (res.PIPELINES_BUCKET, res.UPLOADS_BUCKET, res.RESULTS_BUCKET),
            nag.S3_READ_ACTIONS + nag.S3_WRITE_ACTIONS,
        )

        for consumer in (RESULTS_CONSUMER, DLQ_HANDLER):
            role = self._role(consumer)
            table(res.EXECUTIONS).grant_read_write_data(role)
            self._acknowledge_table_grants(role, data, (res.EXECUTIONS,))

    def _acknowledge_table_grants(self, role: iam.IRole, data: Data, specs: tuple[res.TableSpec, ...]) -> None:
        for spec in specs:
            if spec.indexes:
                nag.acknowledge_indexes(role, data.table(spec))

    def _acknowledge_bucket_grants(
        self, role: iam.IRole, data: Data, specs: tuple[res.BucketSpec, ...], actions: list[str]
    ) -> None:
        """The object ARNs of the granted buckets, and the wildcard action groups those grants wrote."""
        for spec in specs:
            nag.acknowledge_objects(
                role,
                data.bucket(spec),
                f"objects of the {spec.logical_id} bucket only; keys (per user, pipeline or execution) are "
                "chosen at run time",
            )
        nag.acknowledge_actions(
            role, actions, "the action group of a CDK S3 grant (read, write, put or delete), on named buckets only"
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
