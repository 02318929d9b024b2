"""Lambda entry point of the results consumer: out-queue events in batches, with partial batch failures.

A malformed message is logged and dropped (retrying cannot fix it); a DynamoDB outage raises, so only that
record is reported in `batchItemFailures` and comes back later.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executions.dependencies import execution_deps
from functions.http import logger, metrics, tracer
from functions.results.logic import apply_out_event
from shared import telemetry
from shared.errors import PoisonMessage
from shared.messages import ExecutionStatus, parse_out_message

processor = BatchProcessor(event_type=EventType.SQS)

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
    transition = apply_out_event(execution_deps().store, message)
    logger.debug("out-queue event", execution_id=message.execution_id, event=message.event, applied=transition)
    if transition is not None:
        metrics.add_metric(name=TRANSITION_METRICS[transition], unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name=telemetry.DIM_STAGE, value=execution_deps().settings.stage)
    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=record_handler, processor=processor, context=context
    )
