"""The web app's hosting in the template: a private bucket behind CloudFront with origin access control, HTTPS
only, strict security headers, config.json naming the API, the URL as an output, and the API's CORS naming the
distribution's origin (the default when corsAllowOrigins is empty)."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Synthesized


def _distribution(synthesized: Synthesized) -> dict[str, Any]:
    (distribution,) = synthesized.of_type("AWS::CloudFront::Distribution").values()
    return distribution["Properties"]["DistributionConfig"]


def _distribution_id(synthesized: Synthesized) -> str:
    return synthesized.logical_id(synthesized.stack.webapp.distribution)


def test_site_bucket_is_private_and_reached_through_origin_access_control(synthesized: Synthesized) -> None:
    bucket_id = synthesized.logical_id(synthesized.stack.webapp.bucket)
    bucket = synthesized.resources[bucket_id]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert "WebsiteConfiguration" not in bucket
    (oac,) = synthesized.of_type("AWS::CloudFront::OriginAccessControl").values()
    assert oac["Properties"]["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    (origin,) = _distribution(synthesized)["Origins"]
    assert "OriginAccessControlId" in origin
    assert origin["S3OriginConfig"]["OriginAccessIdentity"] == ""
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synthesized.of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (statements,) = policies
    reads = [s for s in statements if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in reads] == [{"Service": "cloudfront.amazonaws.com"}]
    assert _distribution_id(synthesized) in json.dumps(reads[0]["Condition"])


def test_https_only_with_logs(synthesized: Synthesized) -> None:
    config = _distribution(synthesized)
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["AllowedMethods"] == ["GET", "HEAD"]
    assert config["DefaultRootObject"] == "index.html"
    assert "Bucket" in config["Logging"]


def test_security_headers_are_strict(synthesized: Synthesized) -> None:
    (policy,) = synthesized.of_type("AWS::CloudFront::ResponseHeadersPolicy").values()
    headers = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    csp = json.dumps(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    for directive in ("default-src 'none'", "script-src 'self';", "style-src 'self';", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe" not in csp
    assert "*" not in csp.replace("Fn::", "")
    api_id = synthesized.logical_id(synthesized.stack.api.rest_api)
    assert api_id in csp  # connect-src names this stage's API, no other
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["ContentTypeOptions"]["Override"] is True
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"


def test_files_and_config_are_deployed(synthesized: Synthesized) -> None:
    (deployment,) = synthesized.of_type("Custom::CDKBucketDeployment").values()
    props = deployment["Properties"]
    assert props["DestinationBucketName"] == {"Ref": synthesized.logical_id(synthesized.stack.webapp.bucket)}
    assert len(props["SourceObjectKeys"]) == 2  # the webapp/ folder and config.json
    assert props["DistributionPaths"] == ["/*"]
    assert props["SystemMetadata"]["cache-control"] == "public, max-age=0, s-maxage=86400, must-revalidate"
    markers = json.dumps(props.get("SourceMarkers", []))
    assert synthesized.logical_id(synthesized.stack.api.rest_api) in markers  # config.json's apiBaseUrl


def test_url_is_a_stack_output(synthesized: Synthesized) -> None:
    output = synthesized.template.to_json()["Outputs"]["WebAppUrl"]
    assert _distribution_id(synthesized) in json.dumps(output["Value"])


def test_api_cors_allows_the_web_app_origin(synthesized: Synthesized) -> None:
    distribution = _distribution_id(synthesized)
    preflights = [
        m["Properties"]
        for m in synthesized.of_type("AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "OPTIONS"
    ]
    assert preflights
    for method in preflights:
        params = method["Integration"]["IntegrationResponses"][0]["ResponseParameters"]
        assert distribution in json.dumps(params["method.response.header.Access-Control-Allow-Origin"])
    for response in synthesized.of_type("AWS::ApiGateway::GatewayResponse").values():
        origin = response["Properties"]["ResponseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
        assert distribution in json.dumps(origin)
    auth = synthesized.resources[synthesized.logical_id(synthesized.stack.functions["auth"])]
    assert distribution in json.dumps(auth["Properties"]["Environment"]["Variables"]["CORS_ALLOW_ORIGINS"])
