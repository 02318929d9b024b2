"""Lambda entry point of the dead-letter handler: in-queue DLQ messages in batches, with partial batch failures.

Each message's execution becomes FAILED with RETRIES_EXHAUSTED, so none stays QUEUED or RUNNING forever.
An unparseable message names no execution: it is logged and dropped.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.dlq.logic import fail_dead_lettered
from functions.executions.dependencies import execution_deps
from functions.observability import logger, metrics
from functions.sqs import make_sqs_handler
from shared import telemetry
from shared.errors import PoisonMessage
from shared.messages import parse_in_message


def record_handler(record: SQSRecord) -> None:
    try:
        message = parse_in_message(record.body)
    except PoisonMessage as exc:
        logger.error("dropping a malformed dead-lettered message", message_id=record.message_id, reason=exc.message)
        return
    if fail_dead_lettered(execution_deps(), message):
        logger.warning("execution failed: retries exhausted", execution_id=message.execution_id)
        metrics.add_metric(name=telemetry.EXECUTIONS_DEAD_LETTERED, unit=MetricUnit.Count, value=1)


lambda_handler = make_sqs_handler(record_handler)
