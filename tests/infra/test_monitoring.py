"""Alarms (every DLQ, oldest message age, API 5xx rate, function errors) to an encrypted topic; the dashboard."""

from __future__ import annotations

import json

from shared import telemetry
from tests.infra.conftest import Synthesized


def _alarms(synthesized: Synthesized) -> list[dict]:
    return [a["Properties"] for a in synthesized.of_type("AWS::CloudWatch::Alarm").values()]


def _topic_id(synthesized: Synthesized) -> str:
    return synthesized.logical_id(synthesized.stack.monitoring.topic)


def _paging(synthesized: Synthesized) -> list[dict]:
    return [a for a in _alarms(synthesized) if {"Ref": _topic_id(synthesized)} in a.get("AlarmActions", [])]


def test_every_dlq_has_a_not_empty_alarm(synthesized: Synthesized) -> None:
    queues = synthesized.stack.queues
    dlqs = {synthesized.logical_id(p.dlq) for p in [*queues.in_queues.values(), queues.out, queues.webhooks]}
    watched = {
        a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in _paging(synthesized)
        if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
    }
    assert dlqs <= watched
    for alarm in _paging(synthesized):
        if alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible":
            assert alarm["Threshold"] == 0
            assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_oldest_message_age_alarms(synthesized: Synthesized) -> None:
    ages = [a for a in _paging(synthesized) if a.get("MetricName") == "ApproximateAgeOfOldestMessage"]
    assert len(ages) == len(synthesized.stack.queues.in_queues) + 1


def test_api_5xx_rate_and_function_error_alarms(synthesized: Synthesized) -> None:
    paging = _paging(synthesized)
    rate = [a for a in paging if any("errors / requests" in m.get("Expression", "") for m in a.get("Metrics", []))]
    assert len(rate) == 1
    errors = {json.dumps(a["Dimensions"]) for a in paging if a.get("MetricName") == "Errors"}
    for function in synthesized.stack.functions.functions.values():
        assert any(synthesized.logical_id(function) in dims for dims in errors)


def test_topic_is_encrypted_and_ssl_only(synthesized: Synthesized, variant: Synthesized) -> None:
    (topic,) = synthesized.of_type("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    synthesized.template.resource_count_is("AWS::SNS::Subscription", 0)
    (subscription,) = variant.of_type("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"


def test_dashboard_graphs_every_concern(synthesized: Synthesized) -> None:
    (dashboard,) = synthesized.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in (
        "AWS/ApiGateway",
        "Latency",
        "5XXError",
        "4XXError",
        "AWS/Lambda",
        "Duration",
        "Throttles",
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        telemetry.EXECUTIONS_STARTED,
        telemetry.EXECUTIONS_SUCCEEDED,
        telemetry.EXECUTIONS_FAILED,
        telemetry.EXECUTIONS_CANCELLED,
        telemetry.STAGE_DURATION_MS,
        telemetry.GPU_UTILIZATION,
        telemetry.GPU_MEMORY_USED,
        "GroupInServiceInstances",
    ):
        assert needle in body, needle
