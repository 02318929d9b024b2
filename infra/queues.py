"""SQS queues: one in-queue per backend and the out-queue, each with its dead-letter queue and redrive.

Visibility, retention and maxReceiveCount come from `shared.resources` (maxReceiveCount may be overridden by
context); every queue is SSE-encrypted (SQS-managed keys), SSL-only, and long-polls by default. The dead-letter
queues are consumed too (the DLQ handler reads the in-queues' ones), so they get the out-queue's visibility, six
times the consumers' Lambda timeout as AWS asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StagehubConfig
from shared import resources as res

LONG_POLL_S = 20
# The queue consumers' Lambda timeout is a sixth of this (infra.functions.CONSUMER_TIMEOUT_S).
DLQ_VISIBILITY_S = res.OUT_QUEUE_VISIBILITY_S


@dataclass(frozen=True)
class QueuePair:
    spec: res.QueueSpec
    queue: sqs.Queue
    dlq: sqs.Queue


class Queues(Construct):
    """The in-queues (by backend) and the out-queue of one stage."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig, names: res.ResourceNames):
        super().__init__(scope, construct_id)
        self._config = config
        self._names = names
        self.in_queues: dict[str, QueuePair] = {
            backend: self._pair(res.in_queue_spec(backend), _pascal(backend) + "In") for backend in names.backends
        }
        self.out = self._pair(res.OUT_QUEUE, "Out")
        # Webhook events waiting for delivery (retries are re-sent with a delay); exhausted ones go to its DLQ.
        self.webhooks = self._pair(res.WEBHOOK_QUEUE, "Webhooks")

    def _pair(self, spec: res.QueueSpec, construct_id: str) -> QueuePair:
        dlq = sqs.Queue(
            self,
            f"{construct_id}Dlq",
            queue_name=self._names.dlq(spec),
            retention_period=cdk.Duration.seconds(spec.dlq_retention_s),
            visibility_timeout=cdk.Duration.seconds(DLQ_VISIBILITY_S),
            receive_message_wait_time=cdk.Duration.seconds(LONG_POLL_S),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        queue = sqs.Queue(
            self,
            f"{construct_id}Queue",
            queue_name=self._names.queue(spec),
            visibility_timeout=cdk.Duration.seconds(spec.visibility_timeout_s),
            retention_period=cdk.Duration.seconds(spec.retention_s),
            receive_message_wait_time=cdk.Duration.seconds(LONG_POLL_S),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=dlq, max_receive_count=self._config.max_receive_count_for(spec)
            ),
        )
        return QueuePair(spec=spec, queue=queue, dlq=dlq)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
