"""Least privilege: every Lambda role's synthesized policy grants exactly the calls `infra.permissions` declares
for its function on our tables, buckets, queues and secret (no more, no less), and nothing else but logs and
traces."""

from __future__ import annotations

from typing import Any

import pytest

from infra import permissions
from infra.permissions import Grant
from shared import resources as res
from tests.infra.conftest import Synthesized

DATA_SERVICES = ("dynamodb:", "s3:", "sqs:", "secretsmanager:", "cloudwatch:")
# What every function may do besides its data calls: write its own log group, send X-Ray traces.
RUNTIME_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _resource_names(synthesized: Synthesized) -> dict[str, str]:
    stack, lid = synthesized.stack, synthesized.logical_id
    names = {lid(stack.data.table(spec)): f"table:{spec.logical_id}" for spec in res.TABLES}
    names |= {lid(stack.data.bucket(spec)): f"bucket:{spec.logical_id}" for spec in res.BUCKETS}
    for pair in stack.queues.in_queues.values():
        names |= {lid(pair.queue): "queue:in", lid(pair.dlq): "queue:in-dlq"}
    names |= {lid(stack.queues.out.queue): "queue:out", lid(stack.queues.out.dlq): "queue:out-dlq"}
    names |= {lid(stack.queues.webhooks.queue): "queue:webhooks", lid(stack.queues.webhooks.dlq): "queue:webhooks-dlq"}
    names[lid(stack.functions.jwt_secret)] = "secret:jwt"
    return names


def _render(resource: Any, names: dict[str, str]) -> str:
    """A template resource as "table:users", "bucket:uploads/*", "table:users/index/*" (or its JSON)."""
    if isinstance(resource, dict):
        if "Fn::GetAtt" in resource:
            return names.get(resource["Fn::GetAtt"][0], str(resource))
        if "Ref" in resource:
            return names.get(resource["Ref"], str(resource))
        if "Fn::Join" in resource:
            delimiter, parts = resource["Fn::Join"]
            return str(delimiter).join(_render(part, names) for part in parts)
    return str(resource)


def _granted(synthesized: Synthesized, function: str) -> set[Grant]:
    role_id = synthesized.logical_id(synthesized.stack.functions[function].role)
    names = _resource_names(synthesized)
    grants: set[Grant] = set()
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            grants |= {(action, _render(target, names)) for action in actions for target in targets}
    return grants


def test_every_function_has_an_entry(synthesized: Synthesized) -> None:
    assert set(permissions.FUNCTION_ACCESS) == set(synthesized.stack.functions.functions)


@pytest.mark.parametrize("function", sorted(permissions.FUNCTION_ACCESS))
def test_the_role_grants_exactly_the_declared_calls(synthesized: Synthesized, function: str) -> None:
    granted = _granted(synthesized, function)
    data = {grant for grant in granted if grant[0].startswith(DATA_SERVICES)}
    assert data == permissions.declared_grants(function)
    assert {action for action, _ in granted - data} <= RUNTIME_ACTIONS


def test_the_findings_of_the_issue_stay_fixed(synthesized: Synthesized) -> None:
    """Consumers only read and update executions (they never put, delete or scan them); nobody scans, deletes
    object versions or writes in bulk where it does not delete ratings."""
    for consumer in ("results", "dlq"):
        actions = {action for action, target in _granted(synthesized, consumer) if target == "table:executions"}
        assert actions == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem"}
    everything = {grant for function in permissions.FUNCTION_ACCESS for grant in _granted(synthesized, function)}
    assert not {action for action, _ in everything if action in {"dynamodb:Scan", "s3:DeleteObjectVersion"}}
    assert not {action for action, _ in everything if action.endswith("*")}
    bulk = {(action, target) for action, target in everything if action == "dynamodb:BatchWriteItem"}
    assert bulk <= {("dynamodb:BatchWriteItem", "table:ratings")}  # a deleted pipeline's ratings
