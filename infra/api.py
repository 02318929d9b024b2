"""The REST API: resources and methods built from `functions.routes.ROUTES`, the TOKEN authorizer on the
authorized ones, a stage with JSON access logs, throttling and X-Ray, CORS, a request validator, and gateway
responses that answer with API.md's error body `{"code", "message"}`.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions import cors, routes
from infra import nag
from infra.config import StagehubConfig
from infra.functions import AUTHORIZER, Functions, retention_days
from infra.waf import ApiFirewall

AUTHORIZER_CACHE_S = 60  # short: a revoked token stops working within a minute

# Per-method throttles (requests/s, burst) over the stage's default (apiRateLimit/apiBurstLimit), sized for real
# traffic: status polls dominate (a client polls its execution every 1-2 s: 1,000 watching clients ~ 500/s);
# submissions and uploads are a few per user per minute; logins and registrations are rare per person, and
# tight here so a flood of password hashing (argon2id, ~50 ms of CPU each) cannot scale Lambda without bound.
# These are totals over all clients: per-address limits are WAF's (infra.waf) and the auth function's.
# cdk.json's `apiMethodThrottles` ({"POST /auth/login": {"rate": 50, "burst": 100}}) overrides or adds entries.
METHOD_THROTTLES: dict[str, tuple[int, int]] = {
    "POST /auth/register": (10, 20),
    "POST /auth/login": (50, 100),
    "POST /auth/refresh": (100, 200),
    "POST /auth/logout": (50, 100),
    "POST /uploads": (50, 100),
    "POST /pipelines": (50, 100),
    "POST /pipelines/{pipelineId}/executions": (100, 200),
    "GET /executions/{executionId}": (1000, 2000),
}
ALLOWED_HEADERS = cors.ALLOWED_HEADERS


# (gateway response, status code or None to keep API Gateway's, API.md error code)
GATEWAY_RESPONSES: tuple[tuple[apigw.ResponseType, str | None, str], ...] = (
    (apigw.ResponseType.DEFAULT_4_XX, None, "BAD_REQUEST"),
    (apigw.ResponseType.DEFAULT_5_XX, None, "INTERNAL_ERROR"),
    (apigw.ResponseType.UNAUTHORIZED, "401", "UNAUTHORIZED"),
    (apigw.ResponseType.ACCESS_DENIED, "403", "FORBIDDEN"),
    (apigw.ResponseType.EXPIRED_TOKEN, "401", "UNAUTHORIZED"),
    (apigw.ResponseType.INVALID_SIGNATURE, "401", "UNAUTHORIZED"),
    # API Gateway answers an unknown route with MISSING_AUTHENTICATION_TOKEN; API.md says 404.
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "NOT_FOUND"),
    (apigw.ResponseType.RESOURCE_NOT_FOUND, "404", "NOT_FOUND"),
    (apigw.ResponseType.THROTTLED, "429", "THROTTLED"),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", "THROTTLED"),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "PAYLOAD_TOO_LARGE"),
    (apigw.ResponseType.BAD_REQUEST_BODY, "400", "BAD_REQUEST"),
    (apigw.ResponseType.BAD_REQUEST_PARAMETERS, "400", "BAD_REQUEST"),
    (apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE, "415", "UNSUPPORTED_MEDIA_TYPE"),
    (apigw.ResponseType.AUTHORIZER_FAILURE, "500", "INTERNAL_ERROR"),
    (apigw.ResponseType.AUTHORIZER_CONFIGURATION_ERROR, "500", "INTERNAL_ERROR"),
    (apigw.ResponseType.INTEGRATION_FAILURE, "502", "INTERNAL_ERROR"),
    (apigw.ResponseType.INTEGRATION_TIMEOUT, "504", "TIMEOUT"),
)


def error_template(code: str) -> str:
    """API.md's error body; `$context.error.messageString` is API Gateway's message, already JSON-quoted."""
    return '{"code": "%s", "message": $context.error.messageString}' % code  # noqa: UP031 - VTL, not Python


class Api(Construct):
    """The stage's REST API in front of the API functions."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig, functions: Functions) -> None:
        super().__init__(scope, construct_id)
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention_days(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        cors_origins = list(config.cors_allow_origins)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"stagehub-{config.stage}",
            description=f"stagehub {config.stage}: pipelines of neural-network stages",
            # API Gateway's CloudWatch role is an account-wide setting (AWS::ApiGateway::Account) that every stage
            # in the account and region shares: kept on stack deletion so the other stages' logs keep flowing.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
                method_options=method_throttles(config),
            ),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=cors_origins,
                allow_methods=apigw.Cors.ALL_METHODS,
                allow_headers=list(ALLOWED_HEADERS),
            ),
        )
        self.authorizer = apigw.TokenAuthorizer(
            self,
            "TokenAuthorizer",
            handler=functions[AUTHORIZER],
            identity_source=apigw.IdentitySource.header("Authorization"),
            results_cache_ttl=cdk.Duration.seconds(AUTHORIZER_CACHE_S),
        )
        self.validator = self.rest_api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        self._add_routes(functions)
        self._add_gateway_responses(cors_origins)
        self.firewall = ApiFirewall(self, "Firewall", config=config, rest_api=self.rest_api) if config.web_acl else None
        self._acknowledge()

    def _add_routes(self, functions: Functions) -> None:
        integrations = {
            name: apigw.LambdaIntegration(functions[name], allow_test_invoke=False) for name in routes.API_FUNCTIONS
        }
        for route in routes.ROUTES:
            resource = self.rest_api.root.resource_for_path(route.path)
            method = resource.add_method(
                route.method,
                integrations[route.function],
                authorizer=self.authorizer if route.authorized else None,
                authorization_type=apigw.AuthorizationType.CUSTOM if route.authorized else apigw.AuthorizationType.NONE,
                request_validator=self.validator,
            )
            if not route.authorized:
                reason = f"{route.method} {route.path} is public by API.md (no token exists yet, or it is docs)"
                nag.acknowledge(method, "APIG4", reason)
                nag.acknowledge(method, "COG4", reason)

    def _add_gateway_responses(self, cors_origins: list[str]) -> None:
        origin = "'*'" if cors_origins == ["*"] else f"'{cors_origins[0]}'"
        for response_type, status, code in GATEWAY_RESPONSES:
            self.rest_api.add_gateway_response(
                f"{code.title().replace('_', '')}{_response_id(response_type)}",
                type=response_type,
                status_code=status,
                templates={"application/json": error_template(code)},
                response_headers={"Access-Control-Allow-Origin": origin} | _retry_after(status),
            )

    def _acknowledge(self) -> None:
        # (CORS preflight OPTIONS methods have no authorizer either; AwsSolutions does not flag them.)
        nag.acknowledge(
            self.rest_api,
            "COG4",
            "authorized routes use the stagehub TOKEN authorizer (our own JWTs, API.md), not Cognito user pools",
        )
        if self.firewall is None:
            nag.acknowledge(
                self.rest_api,
                "APIG3",
                "webAcl is off in this deployment's context (a private dev stage): the stage still throttles per "
                "method and the auth function limits logins and registrations per address",
            )
        nag.acknowledge(
            self.rest_api,
            "IAM4",
            "API Gateway's own CloudWatch role uses AWS's managed AmazonAPIGatewayPushToCloudWatchLogs policy, "
            "the documented way to let the service write execution logs",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
        )


def _retry_after(status: str | None) -> dict[str, str]:
    """API.md: a 429 carries `Retry-After`; API Gateway's token buckets refill within a second."""
    return {"Retry-After": "'1'"} if status == "429" else {}


def method_throttles(config: StagehubConfig) -> dict[str, apigw.MethodDeploymentOptions]:
    """Stage method settings ("/path/METHOD") for METHOD_THROTTLES with the context's overrides."""
    limits = dict(METHOD_THROTTLES)
    for key, value in config.method_throttles.items():
        limits[key] = (int(value["rate"]), int(value["burst"]))
    known = {f"{route.method} {route.path}" for route in routes.ROUTES}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise ValueError(f"apiMethodThrottles name routes that do not exist: {unknown}")
    return {
        f"{key.split(' ', 1)[1]}/{key.split(' ', 1)[0]}": apigw.MethodDeploymentOptions(
            throttling_rate_limit=rate, throttling_burst_limit=burst
        )
        for key, (rate, burst) in sorted(limits.items())
    }


def _response_id(response_type: apigw.ResponseType) -> str:
    return "".join(part.capitalize() for part in response_type.response_type.split("_"))
