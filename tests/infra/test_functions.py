"""Lambda functions: handlers by string, runtime and architecture, environment naming the real resources,
least-privilege roles with none of our own wildcard actions, and the queue consumers' event sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions import routes
from infra.functions import HANDLER_ENTRY, function_specs
from infra.packaging import LAMBDA_RUNTIME, REPO_ROOT
from shared import resources as res
from shared.settings import Settings
from tests.infra.conftest import Synthesized

SPECS = function_specs()


def _function(synthesized: Synthesized, name: str) -> dict[str, Any]:
    return synthesized.resources[synthesized.logical_id(synthesized.stack.functions[name])]["Properties"]


def test_one_function_per_api_function_plus_authorizer_and_consumers(synthesized: Synthesized) -> None:
    expected = {*routes.API_FUNCTIONS, "authorizer", "results", "dlq", "webhooksender", "sweep"}
    assert set(synthesized.stack.functions.functions) == expected
    # Besides them: the GPU fleets' starter, CDK's providers of the fleet's instance refresh (infra/gpu_fleet) and
    # of the VPC's default security group restriction (feature flag @aws-cdk/aws-ec2:restrictDefaultSecurityGroup),
    # and CDK's BucketDeployment function, which copies the web app's files (infra/webapp.py).
    synthesized.template.resource_count_is("AWS::Lambda::Function", len(expected) + 4)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_handler_runtime_and_layer(synthesized: Synthesized, spec: Any) -> None:
    props = _function(synthesized, spec.name)
    assert props["Handler"] == f"{spec.module}.{HANDLER_ENTRY}"
    module_file = REPO_ROOT / Path(*spec.module.split(".")).with_suffix(".py")
    assert module_file.exists(), f"{spec.module} has no source file"
    assert props["Runtime"] == LAMBDA_RUNTIME.name
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    layer_id = synthesized.logical_id(synthesized.stack.functions.layer)
    assert props["Layers"] == [{"Ref": layer_id}]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_environment_names_real_resources(synthesized: Synthesized, spec: Any) -> None:
    env = _function(synthesized, spec.name)["Environment"]["Variables"]
    stack = synthesized.stack
    for table in res.TABLES:
        assert env[table.env_var] == {"Ref": synthesized.logical_id(stack.data.table(table))}
    for bucket in res.BUCKETS:
        assert env[bucket.env_var] == {"Ref": synthesized.logical_id(stack.data.bucket(bucket))}
    assert env[res.OUT_QUEUE.env_var] == {"Ref": synthesized.logical_id(stack.queues.out.queue)}
    backend_queues = json.dumps(env[res.BACKEND_QUEUES_ENV_VAR])
    for backend, pair in stack.queues.in_queues.items():
        assert backend in backend_queues
        assert synthesized.logical_id(pair.queue) in backend_queues
        assert synthesized.logical_id(pair.dlq) in json.dumps(env[res.BACKEND_DLQS_ENV_VAR])
    assert env["STAGE"] == "test"
    assert json.loads(env["MODELS"])["tiny-sd"]["kind"] == "diffusers"
    assert json.loads(env["DEFAULT_MODELS"]) == {"txt2img": "tiny-sd", "txt2txt": "tiny-lm"}
    # Every variable is a Settings field (or Powertools' own): no name the functions would ignore.
    fields = {name.upper() for name in Settings.model_fields}
    assert {name for name in env if not name.startswith("POWERTOOLS_") and name != "LOG_LEVEL"} <= fields
    secret_id = synthesized.logical_id(stack.functions.jwt_secret)
    if spec.reads_secret:
        assert env["JWT_SECRET_ARN"] == {"Ref": secret_id}
    else:
        assert "JWT_SECRET_ARN" not in env


def _statements(synthesized: Synthesized, role_name: str) -> list[dict[str, Any]]:
    role = synthesized.stack.functions[role_name].role
    role_id = synthesized.logical_id(role)
    found = []
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


def _resources_of(statements: list[dict[str, Any]], action: str) -> str:
    return json.dumps([s["Resource"] for s in statements if action in _actions([s])])


def _is_wildcard(action: str) -> bool:
    return action == "*" or action.endswith(":*")


def test_no_wildcard_actions_anywhere(synthesized: Synthesized) -> None:
    documents = [p["Properties"]["PolicyDocument"] for p in synthesized.of_type("AWS::IAM::Policy").values()]
    for role in synthesized.of_type("AWS::IAM::Role").values():
        documents += [policy["PolicyDocument"] for policy in role["Properties"].get("Policies", [])]
    assert documents
    wildcards = [action for document in documents for action in _actions(document["Statement"]) if _is_wildcard(action)]
    assert wildcards == []


def test_auth_reaches_users_tokens_and_the_secret_only(synthesized: Synthesized) -> None:
    statements = _statements(synthesized, "auth")
    text = json.dumps(statements)
    data = synthesized.stack.data
    assert synthesized.logical_id(data.table(res.USERS)) in text
    assert synthesized.logical_id(data.table(res.REFRESH_TOKENS)) in text
    assert synthesized.logical_id(synthesized.stack.functions.jwt_secret) in _resources_of(
        statements, "secretsmanager:GetSecretValue"
    )
    for other in (res.EXECUTIONS, res.PIPELINES, res.IDEMPOTENCY):
        assert synthesized.logical_id(data.table(other)) not in text
    assert not any(action.startswith(("s3:", "sqs:")) for action in _actions(statements))


def test_authorizer_reads_only_the_secret(synthesized: Synthesized) -> None:
    actions = _actions(_statements(synthesized, "authorizer"))
    assert "secretsmanager:GetSecretValue" in actions
    assert not any(action.startswith(("dynamodb:", "s3:", "sqs:")) for action in actions)


def test_uploads_may_only_put_objects(synthesized: Synthesized) -> None:
    s3_actions = {a for a in _actions(_statements(synthesized, "uploads")) if a.startswith("s3:")}
    assert s3_actions
    assert all(action.startswith("s3:PutObject") or action == "s3:Abort*" for action in s3_actions)


def test_executions_send_to_in_queues_and_manage_results(synthesized: Synthesized) -> None:
    statements = _statements(synthesized, "executions")
    stack = synthesized.stack
    send = _resources_of(statements, "sqs:SendMessage")
    for pair in stack.queues.in_queues.values():
        assert synthesized.logical_id(pair.queue) in send
    results = synthesized.logical_id(stack.data.bucket(res.RESULTS_BUCKET))
    assert results in _resources_of(statements, "s3:DeleteObject")
    assert results in _resources_of(statements, "s3:PutObject")
    assert synthesized.logical_id(stack.data.table(res.IDEMPOTENCY)) in _resources_of(statements, "dynamodb:PutItem")
    assert synthesized.logical_id(stack.data.table(res.PIPELINES)) not in _resources_of(statements, "dynamodb:PutItem")


def test_docs_touches_no_bucket_or_queue_send(synthesized: Synthesized) -> None:
    actions = _actions(_statements(synthesized, "docs"))
    assert "sqs:SendMessage" not in actions
    assert not any(action.startswith("s3:") for action in actions)


@pytest.mark.parametrize("name", ["results", "dlq", "sweep"])
def test_ending_paths_admit_the_next_into_the_in_queues_only(synthesized: Synthesized, name: str) -> None:
    """Every path that ends an execution admits the user's next one: the admission table and an in-queue send."""
    statements = _statements(synthesized, name)
    stack = synthesized.stack
    send = _resources_of(statements, "sqs:SendMessage")
    for pair in stack.queues.in_queues.values():
        assert synthesized.logical_id(pair.queue) in send
    assert synthesized.logical_id(stack.queues.out.queue) not in send
    assert synthesized.logical_id(stack.data.table(res.ADMISSION)) in _resources_of(statements, "dynamodb:UpdateItem")
    s3_actions = {action for action in _actions(statements) if action.startswith("s3:")}
    if name == "results":  # a deleted execution's late outputs are purged
        assert "s3:PutObject" not in s3_actions
        assert synthesized.logical_id(stack.data.bucket(res.RESULTS_BUCKET)) in _resources_of(
            statements, "s3:DeleteObject"
        )
    else:
        assert s3_actions == set()


def test_the_sweep_runs_every_minute(synthesized: Synthesized) -> None:
    sweep = synthesized.logical_id(synthesized.stack.functions["sweep"])
    rules = [r for r in synthesized.of_type("AWS::Events::Rule").values() if sweep in json.dumps(r["Properties"])]
    assert [rule["Properties"]["ScheduleExpression"] for rule in rules] == ["rate(1 minute)"]


def test_event_sources_report_batch_item_failures(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    mappings = {
        (m["Properties"]["FunctionName"]["Ref"], m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]): m["Properties"]
        for m in synthesized.of_type("AWS::Lambda::EventSourceMapping").values()
    }
    expected = {(synthesized.logical_id(stack.functions["results"]), synthesized.logical_id(stack.queues.out.queue))}
    expected |= {
        (synthesized.logical_id(stack.functions["dlq"]), synthesized.logical_id(pair.dlq))
        for pair in stack.queues.in_queues.values()
    }
    expected.add(
        (synthesized.logical_id(stack.functions["webhooksender"]), synthesized.logical_id(stack.queues.webhooks.queue))
    )
    assert set(mappings) == expected
    for props in mappings.values():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert 1 <= props["BatchSize"] <= 10


def test_webhook_roles_hold_only_what_their_code_calls(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    webhooks_table = synthesized.logical_id(stack.data.table(res.WEBHOOKS))
    api = _statements(synthesized, "webhooks")
    assert {a for a in _actions(api) if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
    }
    assert webhooks_table in _resources_of(api, "dynamodb:Query")
    assert not any(a.startswith(("sqs:", "s3:")) for a in _actions(api))
    sender = _statements(synthesized, "webhooksender")
    assert {a for a in _actions(sender) if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    send = _resources_of(sender, "sqs:SendMessage")
    assert synthesized.logical_id(stack.queues.webhooks.queue) in send
    assert synthesized.logical_id(stack.queues.webhooks.dlq) in send
    assert not any(a.startswith("s3:") for a in _actions(sender))
    for publisher in ("results", "dlq"):
        assert webhooks_table in _resources_of(_statements(synthesized, publisher), "dynamodb:UpdateItem")
    assert synthesized.logical_id(stack.queues.webhooks.queue) in _resources_of(
        _statements(synthesized, "executions"), "sqs:SendMessage"
    )


def test_fair_share_settings_reach_every_function_from_context(synthesized: Synthesized) -> None:
    for spec in SPECS:
        env = _function(synthesized, spec.name)["Environment"]["Variables"]
        assert (env["MAX_ACTIVE_EXECUTIONS"], env["MAX_QUEUED_EXECUTIONS"]) == ("4", "100")
        assert "DAILY_GPU_SECONDS" not in env  # off by default


def test_fair_share_context_is_validated() -> None:
    from infra.config import StagehubConfig

    assert StagehubConfig(daily_gpu_seconds=3600).admission_environment()["DAILY_GPU_SECONDS"] == "3600"
    for bad in ({"max_active_executions": 0}, {"max_active_executions": 5, "max_queued_executions": 4}):
        with pytest.raises(ValueError, match="maxActiveExecutions"):
            StagehubConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dailyGpuSeconds"):
        StagehubConfig(daily_gpu_seconds=0)
