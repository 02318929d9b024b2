"""Every queue of shared.resources: SSE, SSL-only policy, visibility, retention, long polling, redrive to its DLQ."""

from __future__ import annotations

import pytest

from infra.functions import CONSUMER_TIMEOUT_S
from infra.queues import QueuePair
from shared import resources as res
from tests.infra.conftest import Synthesized


def _pairs(synthesized: Synthesized) -> list[QueuePair]:
    queues = synthesized.stack.queues
    return [*queues.in_queues.values(), queues.out]


def test_one_queue_and_one_dlq_per_backend_and_the_out_queue(synthesized: Synthesized) -> None:
    assert set(synthesized.stack.queues.in_queues) == set(res.BACKENDS)
    synthesized.template.resource_count_is("AWS::SQS::Queue", 2 * (len(res.BACKENDS) + 1) + 2)  # + webhooks


@pytest.mark.parametrize("index", range(len(res.BACKENDS) + 1))
def test_queue_matches_its_spec(synthesized: Synthesized, index: int) -> None:
    pair = _pairs(synthesized)[index]
    spec = pair.spec
    queue = synthesized.resources[synthesized.logical_id(pair.queue)]["Properties"]
    dlq = synthesized.resources[synthesized.logical_id(pair.dlq)]["Properties"]
    assert queue["QueueName"] == spec.physical_name("test")
    assert dlq["QueueName"] == spec.dlq_physical_name("test")
    assert queue["VisibilityTimeout"] == spec.visibility_timeout_s
    assert queue["MessageRetentionPeriod"] == spec.retention_s
    assert dlq["MessageRetentionPeriod"] == spec.dlq_retention_s
    assert queue["ReceiveMessageWaitTimeSeconds"] == 20
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [synthesized.logical_id(pair.dlq), "Arn"]},
        "maxReceiveCount": spec.max_receive_count,
    }
    assert queue["SqsManagedSseEnabled"] is True
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["ReceiveMessageWaitTimeSeconds"] == 20


def test_every_queue_denies_plain_http(synthesized: Synthesized) -> None:
    secured: set[str] = set()
    for policy in synthesized.of_type("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}:
                secured.update(ref["Ref"] for ref in policy["Properties"]["Queues"])
    assert secured == set(synthesized.of_type("AWS::SQS::Queue"))


def test_consumed_queues_have_six_times_the_consumer_timeout(synthesized: Synthesized) -> None:
    """Every queue a Lambda function consumes (the out-queue, the in-queues' DLQs): visibility >= 6 x its timeout."""
    functions = {synthesized.logical_id(fn): fn for fn in synthesized.stack.functions.functions.values()}
    mappings = synthesized.of_type("AWS::Lambda::EventSourceMapping").values()
    assert mappings
    for mapping in mappings:
        props = mapping["Properties"]
        function = synthesized.resources[props["FunctionName"]["Ref"]]["Properties"]
        queue = synthesized.resources[props["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
        assert props["FunctionName"]["Ref"] in functions
        assert function["Timeout"] == CONSUMER_TIMEOUT_S
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]


def test_max_receive_count_from_context(variant: Synthesized) -> None:
    for pair in _pairs(variant):
        props = variant.resources[variant.logical_id(pair.queue)]["Properties"]
        assert props["RedrivePolicy"]["maxReceiveCount"] == 7
