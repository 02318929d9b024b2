"""Acknowledging cdk-nag findings next to the resource they concern, each with the reason it is acceptable.

cdk-nag 3 reads CDK's own `Validations.of(scope).acknowledge(...)`; a finding that names a wildcard (IAM5) is
acknowledged one by one as `RuleId[Action::...]` or `RuleId[Resource::...]`.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str, finding: str | None = None) -> None:
    """Acknowledge one rule (e.g. "IAM5") on `scope` and everything under it."""
    rule_id = f"{PACK}-{rule}" + (f"[{finding}]" if finding else "")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))


def acknowledge_runtime(function: IConstruct, runtime_name: str) -> None:
    """L1 (not the newest Lambda runtime) on one of our functions: the runtime is chosen to match the bytecode."""
    acknowledge(
        function,
        "L1",
        f"{runtime_name}: the newest runtime whose Python the build byte-compiles the code and layer with "
        "(infra/packaging.py); a newer one would recompile every module on each cold start",
    )


def finding_text(scope: IConstruct, value: object) -> str:
    """How cdk-nag writes a value in a finding (its flattenCfnReference): the value as the template has it, with
    `{"Ref": X}` as `<X>`, `{"Fn::GetAtt": [X, A]}` as `<X.A>`, joins joined and `${X}` of Fn::Sub as `<X>`.

    Resolving the very token a grant used keeps the text right whether the stack is environment-agnostic
    (`<AWS::Region>`) or has an account and region in context (literal values)."""
    return _flatten(cdk.Stack.of(scope).resolve(value))


def _flatten(node: object) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def acknowledge_resource(scope: IConstruct, resource: object, reason: str) -> None:
    """An IAM5 `Resource::...` finding: `resource` is the (token) ARN the policy statement names."""
    acknowledge(scope, "IAM5", reason, f"Resource::{finding_text(scope, resource)}")


def acknowledge_objects(scope: IConstruct, bucket: s3.IBucket, reason: str) -> None:
    """Object-level access to one of our buckets: the key is chosen at run time, the bucket is fixed."""
    acknowledge_resource(scope, bucket.arn_for_objects("*"), reason)


# The wildcard actions that CDK's S3 grants write (AwsSolutions-IAM5 names each one): grant_read gives the first
# group; grant_read_write and grant_delete add the second. (The Lambda roles name single actions instead:
# infra.permissions.)
S3_READ_ACTIONS = ["s3:GetObject*", "s3:GetBucket*", "s3:List*"]
S3_WRITE_ACTIONS = ["s3:DeleteObject*", "s3:Abort*"]


def acknowledge_actions(scope: IConstruct, actions: list[str], reason: str) -> None:
    """Action groups that a CDK grant method writes with a trailing `*` (always on a named resource)."""
    for action in actions:
        acknowledge(scope, "IAM5", reason, f"Action::{action}")


def acknowledge_indexes(scope: IConstruct, table: dynamodb.ITable) -> None:
    """Queries on a table's own global secondary indexes (`<table arn>/index/*`)."""
    acknowledge_resource(
        scope,
        f"{table.table_arn}/index/*",
        "the table's own global secondary indexes; the grant names the table, the index is chosen per query",
    )


XRAY_REASON = "X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions (Resource '*')"


def acknowledge_tracing(scope: IConstruct) -> None:
    acknowledge(scope, "IAM5", XRAY_REASON, "Resource::*")
