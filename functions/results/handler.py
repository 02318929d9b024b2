"""Lambda entry point of the results consumer: out-queue events in batches, with partial batch failures.

A malformed message is logged and dropped (retrying cannot fix it); a DynamoDB outage raises, so only that
record is reported in `batchItemFailures` and comes back later.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.executions.dependencies import execution_deps
from functions.observability import logger, metrics
from functions.results.logic import apply_out_event
from functions.sqs import make_sqs_handler
from shared import telemetry
from shared.errors import PoisonMessage
from shared.messages import ExecutionStatus, parse_out_message

TRANSITION_METRICS = {
    ExecutionStatus.RUNNING: telemetry.EXECUTIONS_STARTED,
    ExecutionStatus.SUCCEEDED: telemetry.EXECUTIONS_SUCCEEDED,
    ExecutionStatus.FAILED: telemetry.EXECUTIONS_FAILED,
    ExecutionStatus.CANCELLED: telemetry.EXECUTIONS_CANCELLED,
}


def record_handler(record: SQSRecord) -> None:
    try:
        message = parse_out_message(record.body)
    except PoisonMessage as exc:
        logger.error("dropping a malformed out-queue message", message_id=record.message_id, reason=exc.message)
        return
    transition = apply_out_event(execution_deps(), message)
    logger.debug("out-queue event", execution_id=message.execution_id, event=message.event, applied=transition)
    if transition is not None:
        metrics.add_metric(name=TRANSITION_METRICS[transition], unit=MetricUnit.Count, value=1)


lambda_handler = make_sqs_handler(record_handler)
