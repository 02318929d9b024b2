"""The web app's hosting: `webapp/` in a private S3 bucket behind CloudFront (origin access control, HTTPS only,
security headers with a strict Content-Security-Policy), and `config.json` naming the API, written at deploy.

The API's CORS allows this distribution's origin unless `corsAllowOrigins` says otherwise (infra/stack.py);
the stack outputs the page's URL as `WebAppUrl`.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra import nag
from shared import webapp as web

WEBAPP_DIR = Path(__file__).resolve().parents[1] / "webapp"
DEPLOYMENT_FUNCTION_PREFIX = "Custom::CDKBucketDeployment"
CACHE_CONTROL = "public, max-age=0, s-maxage=86400, must-revalidate"


@jsii.implements(cdk.IStableStringProducer)
class LateValue:
    """A string known only once a later construct exists (the distribution's origin for the API's CORS, which
    the stack builds before the web app): `token` now, `set()` once known."""

    def __init__(self) -> None:
        self._value: str | None = None
        self.token = cdk.Lazy.string(self)

    def set(self, value: str) -> None:
        self._value = value

    def produce(self) -> str | None:
        if self._value is None:
            raise ValueError("the web app's origin was used but never set")
        return self._value


def bucket_origins(bucket_name: str) -> list[str]:
    """The origins of a bucket's presigned URLs (virtual-hosted style, global and regional endpoint).

    By name (shared.resources), not by reference: the uploads bucket's CORS rule names this distribution."""
    return [
        f"https://{bucket_name}.s3.amazonaws.com",
        f"https://{bucket_name}.s3.{cdk.Aws.REGION}.amazonaws.com",
    ]


class WebApp(Construct):
    """The page's bucket, distribution, headers and files."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        rest_api: apigw.RestApi,
        uploads_bucket_name: str,
        results_bucket_name: str,
        access_logs: s3.IBucket,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "SiteBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="webapp-site/",
            removal_policy=removal_policy,
            auto_delete_objects=removal_policy == cdk.RemovalPolicy.DESTROY,  # destroy-then-deploy works
        )
        # CloudFront's standard logs are written with ACLs, which the stack's other buckets disable.
        self.cdn_logs = s3.Bucket(
            self,
            "CdnLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="webapp-cdn-logs/",
            lifecycle_rules=[s3.LifecycleRule(id="expire-after-90-days", expiration=cdk.Duration.days(90))],
            removal_policy=removal_policy,
            auto_delete_objects=removal_policy == cdk.RemovalPolicy.DESTROY,  # destroy-then-deploy works
        )
        api_origin = f"https://{rest_api.rest_api_id}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        self.csp = web.content_security_policy(
            connect_origins=[api_origin, *bucket_origins(uploads_bucket_name)],
            image_origins=bucket_origins(results_bucket_name),
        )
        self.headers = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            comment="stagehub web app: strict CSP, HSTS, no framing, no sniffing, no referrer",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=self.csp, override=True
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=cdk.Duration.seconds(web.HSTS_MAX_AGE_S),
                    include_subdomains=True,
                    override=True,
                ),
            ),
            custom_headers_behavior=cloudfront.ResponseCustomHeadersBehavior(
                custom_headers=[
                    cloudfront.ResponseCustomHeader(
                        header="Permissions-Policy", value=web.PERMISSIONS_POLICY, override=True
                    ),
                    cloudfront.ResponseCustomHeader(
                        header="Cross-Origin-Opener-Policy", value="same-origin", override=True
                    ),
                ]
            ),
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="stagehub web app",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers,
                compress=True,
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=self.cdn_logs,
            log_file_prefix="webapp/",
        )
        self.origin = f"https://{self.distribution.distribution_domain_name}"
        self.url = f"{self.origin}/"
        self.deployment = s3deploy.BucketDeployment(
            self,
            "Files",
            sources=[
                s3deploy.Source.asset(str(WEBAPP_DIR)),
                s3deploy.Source.json_data(web.CONFIG_FILE, {"apiBaseUrl": rest_api.url}),
            ],
            destination_bucket=self.bucket,
            # Browsers revalidate every file (a deploy's files arrive together); CloudFront keeps them until the
            # deployment's invalidation.
            cache_control=[s3deploy.CacheControl.from_string(CACHE_CONTROL)],
            distribution=self.distribution,
            distribution_paths=["/*"],
            prune=True,
            memory_limit=256,
        )
        self._acknowledge()

    def _acknowledge(self) -> None:
        nag.acknowledge(
            self.distribution,
            "CFR1",
            "a public web app for everyone the API serves: no country is excluded, so no geo restriction",
        )
        nag.acknowledge(
            self.distribution,
            "CFR2",
            "no WAF web ACL: the distribution serves static files only (GET/HEAD, cached); the API behind it has "
            "its own throttles, and a web ACL's fixed monthly cost does not fit a deployment that idles at zero",
        )
        nag.acknowledge(
            self.distribution,
            "CFR4",
            "the distribution uses CloudFront's default *.cloudfront.net certificate, for which CloudFront fixes "
            "the viewer security policy (TLSv1); a custom domain with its own certificate gets TLSv1.2_2021",
        )
        deployment_function = next(
            child for child in cdk.Stack.of(self).node.children if child.node.id.startswith(DEPLOYMENT_FUNCTION_PREFIX)
        )
        copy = (
            "CDK's BucketDeployment function copies its asset's files into the site bucket and prunes the rest "
            "(object-level actions; the asset's and the site's bucket only)"
        )
        nag.acknowledge(
            deployment_function,
            "IAM4",
            "CDK's BucketDeployment function logs with AWS's managed AWSLambdaBasicExecutionRole policy",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        )
        nag.acknowledge(
            deployment_function,
            "L1",
            "CDK's BucketDeployment sets its function's runtime to match the AWS CLI layer it bundles (no option)",
        )
        nag.acknowledge_actions(deployment_function, [*nag.S3_READ_ACTIONS, *nag.S3_WRITE_ACTIONS], copy)
        nag.acknowledge_objects(deployment_function, self.bucket, copy)
        stack = cdk.Stack.of(self)
        qualifier = cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER
        assets = f"arn:{stack.partition}:s3:::cdk-{qualifier}-assets-{stack.account}-{stack.region}/*"
        nag.acknowledge_resource(deployment_function, assets, copy)
        nag.acknowledge(
            deployment_function,
            "IAM5",
            "CDK's BucketDeployment grants cloudfront:CreateInvalidation/GetInvalidation on '*' (its policy is not "
            "configurable); the function invalidates this distribution only",
            "Resource::*",
        )
