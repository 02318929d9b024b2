"""The entry point every SQS-triggered function shares: Powertools' BatchProcessor with partial batch failures.

Only the records whose handler raised are reported in `batchItemFailures`; SQS redelivers just those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executions.dependencies import execution_deps
from functions.observability import LambdaHandler, capture_lambda_handler, logger, metrics
from shared import telemetry


def make_sqs_handler(record_handler: Callable[[SQSRecord], None]) -> LambdaHandler:
    processor = BatchProcessor(event_type=EventType.SQS)

    @logger.inject_lambda_context
    @capture_lambda_handler
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        metrics.add_dimension(name=telemetry.DIM_STAGE, value=execution_deps().settings.stage)
        return process_partial_response(  # type: ignore[return-value]
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return lambda_handler
