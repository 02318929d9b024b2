"""SQS access behind one small class: send, receive, delete and change visibility.

Botocore errors become `QueueUnavailable` (transient) here, so callers never see a bare ClientError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ServiceUnavailable, TransientFailure


class QueueUnavailable(ServiceUnavailable, TransientFailure):
    """SQS failed; worth retrying."""


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class QueueClient:
    """SQS operations; `sqs` is a boto3 SQS client (see `shared.aws.client`)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise QueueUnavailable(f"SQS {operation} failed: {exc}") from exc

    def send(self, queue_url: str, body: str) -> str:
        return self._call("send_message", QueueUrl=queue_url, MessageBody=body)["MessageId"]  # type: ignore[no-any-return]

    def receive(self, queue_url: str, *, max_messages: int = 1, wait_s: int = 20) -> list[ReceivedMessage]:
        response = self._call(
            "receive_message",
            QueueUrl=queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, queue_url: str, receipt_handle: str) -> None:
        self._call("delete_message", QueueUrl=queue_url, ReceiptHandle=receipt_handle)

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        self._call(
            "change_message_visibility", QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s
        )

    def send_later(self, queue_url: str, body: str, delay_s: int) -> str:
        """Send a message that becomes visible after `delay_s` seconds (SQS allows 0-900)."""
        response = self._call("send_message", QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay_s)
        return response["MessageId"]  # type: ignore[no-any-return]

    def attributes(self, queue_url: str, names: list[str]) -> dict[str, str]:
        """Some of a queue's attributes (e.g. ApproximateNumberOfMessages), as SQS gives them: strings."""
        return self._call("get_queue_attributes", QueueUrl=queue_url, AttributeNames=names)["Attributes"]  # type: ignore[no-any-return]
