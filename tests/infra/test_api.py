"""The REST API: every route of functions.routes.ROUTES, authorized ones behind the TOKEN authorizer, public ones
with no authorization, each integrated with its function; the stage; API.md's error body on gateway responses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions import routes
from infra.api import AUTHORIZER_CACHE_S, GATEWAY_RESPONSES, METHOD_THROTTLES, method_throttles
from infra.config import StagehubConfig
from tests.infra.conftest import Synthesized


def _resource_paths(synthesized: Synthesized) -> dict[str, str]:
    """Logical id of each API Gateway resource -> its full path."""
    resources = synthesized.of_type("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = path_of(parent["Ref"]) if "Ref" in parent else ""
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


def _methods(synthesized: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _resource_paths(synthesized)
    methods = {}
    for method in synthesized.of_type("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource_id = props["ResourceId"]
        path = paths[resource_id["Ref"]] if "Ref" in resource_id else "/"
        methods[(props["HttpMethod"], path)] = props
    return methods


def test_every_route_and_nothing_else(synthesized: Synthesized) -> None:
    methods = {key for key in _methods(synthesized) if key[0] != "OPTIONS"}
    assert methods == {(route.method, route.path) for route in routes.ROUTES}


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_route_authorization_and_integration(synthesized: Synthesized, route: routes.Route) -> None:
    method = _methods(synthesized)[(route.method, route.path)]
    authorizer_id = synthesized.logical_id(synthesized.stack.api.authorizer)
    if route.authorized:
        assert method["AuthorizationType"] == "CUSTOM"
        assert method["AuthorizerId"] == {"Ref": authorizer_id}
    else:
        assert method["AuthorizationType"] == "NONE"
        assert "AuthorizerId" not in method
    integration = method["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    function_id = synthesized.logical_id(synthesized.stack.functions[route.function])
    assert {"Fn::GetAtt": [function_id, "Arn"]} in integration["Uri"]["Fn::Join"][1]
    assert method["RequestValidatorId"] == {"Ref": synthesized.logical_id(synthesized.stack.api.validator)}


def test_cors_preflight_on_every_resource(synthesized: Synthesized) -> None:
    options = {path for method, path in _methods(synthesized) if method == "OPTIONS"}
    assert {route.path for route in routes.ROUTES} <= options


def test_token_authorizer_reads_the_authorization_header_and_caches_briefly(synthesized: Synthesized) -> None:
    (authorizer,) = synthesized.of_type("AWS::ApiGateway::Authorizer").values()
    props = authorizer["Properties"]
    assert props["Type"] == "TOKEN"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert 0 < props["AuthorizerResultTtlInSeconds"] == AUTHORIZER_CACHE_S <= 300
    function_id = synthesized.logical_id(synthesized.stack.functions["authorizer"])
    assert function_id in json.dumps(props["AuthorizerUri"])


def test_stage_logs_throttles_and_traces(synthesized: Synthesized) -> None:
    (stage,) = synthesized.of_type("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "test"
    assert props["TracingEnabled"] is True
    access = props["AccessLogSetting"]
    assert json.loads(access["Format"])["status"] == "$context.status"
    assert "Fn::GetAtt" in access["DestinationArn"] or ":log-group:" in json.dumps(access["DestinationArn"])
    settings = {(s["HttpMethod"], s["ResourcePath"]): s for s in props["MethodSettings"]}
    stage_wide = settings.pop(("*", "/*"))
    assert stage_wide["ThrottlingRateLimit"] == 200
    assert stage_wide["ThrottlingBurstLimit"] == 400
    assert stage_wide["LoggingLevel"] == "ERROR"
    # Per-method throttles (infra.api.METHOD_THROTTLES), sized per route rather than one figure for all.
    expected = {}
    for key, (rate, burst) in METHOD_THROTTLES.items():
        method, path = key.split(" ", 1)
        expected[(method, "/" + path.replace("/", "~1"))] = (rate, burst)
    assert {k: (s["ThrottlingRateLimit"], s["ThrottlingBurstLimit"]) for k, s in settings.items()} == expected
    assert expected[("POST", "/~1auth~1register")] < expected[("GET", "/~1executions~1{executionId}")]


@pytest.mark.parametrize(("response_type", "status", "code"), GATEWAY_RESPONSES, ids=lambda v: str(v))
def test_gateway_responses_carry_the_error_body(
    synthesized: Synthesized, response_type: Any, status: str | None, code: str
) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesized.of_type("AWS::ApiGateway::GatewayResponse").values()
    }
    props = responses[response_type.response_type]
    template = props["ResponseTemplates"]["application/json"]
    # API Gateway substitutes the (JSON-quoted) message; what is left must be API.md's body.
    body = json.loads(template.replace("$context.error.messageString", '"a message"'))
    assert body == {"code": code, "message": "a message"}
    assert props.get("StatusCode") == status
    if status == "429":  # API.md: every 429 carries Retry-After
        assert props["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_unknown_routes_answer_404_not_found(synthesized: Synthesized) -> None:
    statuses = {(t.response_type, s, c) for t, s, c in GATEWAY_RESPONSES}
    assert ("MISSING_AUTHENTICATION_TOKEN", "404", "NOT_FOUND") in statuses


def test_account_cloudwatch_role_outlives_the_stack(synthesized: Synthesized) -> None:
    """API Gateway's CloudWatch role is account-wide: deleting one stage must not break the others' logging."""
    (account,) = synthesized.of_type("AWS::ApiGateway::Account").values()
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    assert synthesized.resources[role_id]["DeletionPolicy"] == "Retain"


def test_a_waf_web_acl_rate_limits_each_address_tighter_on_auth(synthesized: Synthesized) -> None:
    (acl,) = synthesized.of_type("AWS::WAFv2::WebACL").values()
    rules = {rule["Name"]: rule for rule in acl["Properties"]["Rules"]}
    auth, api = rules["auth-per-address"]["Statement"], rules["api-per-address"]["Statement"]
    assert auth["RateBasedStatement"]["AggregateKeyType"] == "IP"
    assert auth["RateBasedStatement"]["Limit"] < api["RateBasedStatement"]["Limit"]
    assert auth["RateBasedStatement"]["ScopeDownStatement"]["ByteMatchStatement"]["SearchString"] == "/auth/"
    for rule in rules.values():
        response = rule["Action"]["Block"]["CustomResponse"]
        assert response["ResponseCode"] == 429
        assert {"Name": "Retry-After", "Value": "60"} in response["ResponseHeaders"]
    body = acl["Properties"]["CustomResponseBodies"]["throttled"]
    assert json.loads(body["Content"])["code"] == "THROTTLED"
    (association,) = synthesized.of_type("AWS::WAFv2::WebACLAssociation").values()
    stage_id = synthesized.logical_id(synthesized.stack.api.rest_api.deployment_stage)
    assert {"Ref": stage_id} in association["Properties"]["ResourceArn"]["Fn::Join"][1]


def test_method_throttles_take_overrides_from_context_and_refuse_unknown_routes() -> None:
    overridden = method_throttles(StagehubConfig(method_throttles={"POST /auth/login": {"rate": 7, "burst": 9}}))
    assert overridden["/auth/login/POST"].throttling_rate_limit == 7
    assert overridden["/auth/login/POST"].throttling_burst_limit == 9
    with pytest.raises(ValueError, match="do not exist"):
        method_throttles(StagehubConfig(method_throttles={"POST /nope": {"rate": 1, "burst": 1}}))


def test_a_deployment_may_go_without_the_web_acl(variant: Synthesized) -> None:
    """`webAcl: false` (a private dev stage): no web ACL, and cdk-nag's APIG3 is acknowledged, not silenced."""
    assert variant.of_type("AWS::WAFv2::WebACL") == {}
    assert variant.of_type("AWS::WAFv2::WebACLAssociation") == {}
