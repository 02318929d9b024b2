"""A WAF web ACL on the API stage: per-client-address rate limits, tighter on `/auth/*`.

The auth function's own limits (API.md "Login throttling", counted in DynamoDB) shape the answers a person sees;
these rules stop floods before they reach Lambda at all: one address over its rate gets API.md's 429 body
(with `Retry-After`) from WAF itself until its rate falls. WAF counts over a sliding window of
`RATE_WINDOW_S` seconds and checks every few seconds, so a burst may overshoot by a little.
"""

from __future__ import annotations

import json

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.config import StagehubConfig

RATE_WINDOW_S = 300  # WAF's evaluation window for the rate-based rules (60, 120, 300 or 600)
_BODY_KEY = "throttled"
_THROTTLED_BODY = json.dumps({"code": "THROTTLED", "message": "too many requests from this address"})


def _block_429() -> wafv2.CfnWebACL.RuleActionProperty:
    return wafv2.CfnWebACL.RuleActionProperty(
        block=wafv2.CfnWebACL.BlockActionProperty(
            custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                response_code=429,
                custom_response_body_key=_BODY_KEY,
                response_headers=[wafv2.CfnWebACL.CustomHTTPHeaderProperty(name="Retry-After", value="60")],
            )
        )
    )


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def _rate_rule(
    name: str, priority: int, limit: int, scope_down: wafv2.CfnWebACL.StatementProperty | None = None
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        action=_block_429(),
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                aggregate_key_type="IP",
                limit=limit,
                evaluation_window_sec=RATE_WINDOW_S,
                scope_down_statement=scope_down,
            )
        ),
        visibility_config=_visibility(name),
    )


def _path_contains_auth() -> wafv2.CfnWebACL.StatementProperty:
    # The path WAF inspects on API Gateway may carry the stage ("/dev/auth/login"): match "/auth/" anywhere.
    return wafv2.CfnWebACL.StatementProperty(
        byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
            field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}),
            positional_constraint="CONTAINS",
            search_string="/auth/",
            text_transformations=[wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="LOWERCASE")],
        )
    )


class ApiFirewall(Construct):
    """The web ACL and its association with the REST API's stage."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig, rest_api: apigw.RestApi):
        super().__init__(scope, construct_id)
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=f"stagehub-{config.stage}-api",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            custom_response_bodies={
                _BODY_KEY: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON", content=_THROTTLED_BODY
                )
            },
            rules=[
                _rate_rule("auth-per-address", 0, config.waf_auth_rate_limit, _path_contains_auth()),
                _rate_rule("api-per-address", 1, config.waf_rate_limit),
            ],
            visibility_config=_visibility(f"stagehub-{config.stage}-api"),
        )
        self.association = wafv2.CfnWebACLAssociation(
            self,
            "StageAssociation",
            resource_arn=rest_api.deployment_stage.stage_arn,
            web_acl_arn=self.web_acl.attr_arn,
        )
        self.association.node.add_dependency(rest_api.deployment_stage)
