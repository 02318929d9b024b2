"""Lambda entry point of the webhook sender: webhook-queue messages (one event attempt each), partial failures.

A malformed message is logged and dropped; a DynamoDB or SQS failure raises, so SQS delivers that message
again (and after `maxReceiveCount` such failures moves it to the webhook DLQ).
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.observability import logger
from functions.sqs import make_sqs_handler
from functions.webhooks.dependencies import webhook_deps
from functions.webhooks.events import parse_webhook_message
from shared.errors import PoisonMessage


def record_handler(record: SQSRecord) -> None:
    from functions.webhooks.sender import send_event  # the store and the HTTP client: on the first batch

    try:
        message = parse_webhook_message(record.body)
    except PoisonMessage as exc:
        logger.error("dropping a malformed webhook message", message_id=record.message_id, reason=exc.message)
        return
    outcome = send_event(message, webhook_deps())
    logger.info(
        "webhook attempt",
        execution_id=message.execution_id,
        webhook_id=message.webhook_id,
        attempt=message.attempt,
        outcome=outcome,
    )


lambda_handler = make_sqs_handler(record_handler)
