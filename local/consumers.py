"""The local stand-in for Lambda's SQS event source mappings: the out-queue, dead-letter and webhook consumers.

Background threads long-poll the out-queue and every in-queue DLQ on moto, wrap what they receive into real SQS
Lambda events, call the same `lambda_handler`s as AWS does, and delete the messages the handler did not report in
`batchItemFailures` (those reappear after their visibility timeout, as with Lambda's partial batch responses).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.routes import DLQ_HANDLER_MODULE, RESULTS_CONSUMER_MODULE, WEBHOOK_SENDER_MODULE
from shared.aws import client
from shared.errors import ServiceUnavailable
from shared.queues import QueueClient, ReceivedMessage
from shared.settings import Settings

log = logging.getLogger("stagehub.local.consumers")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
BATCH_SIZE = 10  # the event source mappings' batch size
WAIT_S = 1  # short long-polls, so that stop() returns within about a second


@dataclass(frozen=True)
class LambdaContext:
    """The parts of Lambda's context object that Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = ""
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def queue_arn(queue_url: str, region: str) -> str:
    """The ARN of a queue from its URL (account and name are its last two path parts)."""
    account, name = queue_url.rstrip("/").split("/")[-2:]
    return f"arn:aws:sqs:{region}:{account}:{name}"


def sqs_record(message: ReceivedMessage, arn: str, region: str) -> dict[str, Any]:
    """One record of an SQS Lambda event, as the event source mapping builds it."""
    return {
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": {
            "ApproximateReceiveCount": str(message.receive_count),
            "SentTimestamp": "0",
            "SenderId": "local",
            "ApproximateFirstReceiveTimestamp": "0",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(message.body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def lambda_context(function_name: str) -> LambdaContext:
    request_id = str(uuid.uuid4())
    return LambdaContext(function_name, aws_request_id=request_id, invoked_function_arn=f"local:{function_name}")


def _handler(module: str) -> Handler:
    return importlib.import_module(module).lambda_handler  # type: ignore[no-any-return]


@dataclass
class _Source:
    """One queue and the handler its messages go to (the lock: one invocation of a handler at a time)."""

    name: str
    queue_url: str
    handler: Handler
    lock: threading.Lock


class QueueConsumers:
    """Polls the out-queue (results consumer) and every backend's in-queue DLQ (dead-letter handler)."""

    def __init__(self, settings: Settings, *, wait_s: int = WAIT_S) -> None:
        self._settings = settings
        self._wait_s = wait_s
        self._queues = QueueClient(client("sqs", settings))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        results, dlq = _handler(RESULTS_CONSUMER_MODULE), _handler(DLQ_HANDLER_MODULE)
        results_lock, dlq_lock = threading.Lock(), threading.Lock()
        self._sources = []
        if settings.out_queue_url:
            self._sources.append(_Source("results", settings.out_queue_url, results, results_lock))
        for backend, url in settings.backend_dlqs.items():
            self._sources.append(_Source(f"dlq-{backend}", url, dlq, dlq_lock))
        if settings.webhook_queue_url:  # the webhook sender, as its event source mapping runs it in AWS
            sender = _handler(WEBHOOK_SENDER_MODULE)
            self._sources.append(_Source("webhooks", settings.webhook_queue_url, sender, threading.Lock()))

    def start(self) -> QueueConsumers:
        self._stop.clear()
        for source in self._sources:
            thread = threading.Thread(target=self._run, args=(source,), name=f"consumer-{source.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    def __enter__(self) -> QueueConsumers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def poll_once(self, wait_s: int = 0) -> int:
        """Receive and handle one batch from every queue, in this thread; returns how many messages it handled."""
        return sum(self._poll(source, wait_s) for source in self._sources)

    def _run(self, source: _Source) -> None:
        while not self._stop.is_set():
            try:
                self._poll(source, self._wait_s)
            except ServiceUnavailable:
                log.warning("polling %s failed; retrying", source.name, exc_info=True)
                self._stop.wait(1.0)
            except Exception:
                log.exception("the %s handler failed; its messages will be received again", source.name)
                self._stop.wait(1.0)

    def _poll(self, source: _Source, wait_s: int) -> int:
        messages = self._queues.receive(source.queue_url, max_messages=BATCH_SIZE, wait_s=wait_s)
        if not messages:
            return 0
        region = self._settings.region
        arn = queue_arn(source.queue_url, region)
        event = {"Records": [sqs_record(m, arn, region) for m in messages]}
        with source.lock:
            response = source.handler(event, lambda_context(f"stagehub-local-{source.name}"))
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        for message in messages:
            if message.message_id not in failed:
                self._queues.delete(source.queue_url, message.receipt_handle)
        return len(messages)


SWEEP_INTERVAL_S = 30.0  # the EventBridge schedule's stand-in (every minute in AWS)


class Sweeper:
    """Calls the sweep's Lambda handler every `interval_s` in a daemon thread, as the schedule does in AWS."""

    def __init__(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        from functions.routes import SWEEP_MODULE

        self._interval_s = interval_s
        self._handler = _handler(SWEEP_MODULE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, Any]:
        return self._handler({"source": "aws.events", "detail-type": "Scheduled Event"}, lambda_context("sweep"))

    def start(self) -> Sweeper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sweep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("the sweep failed; it runs again in %.0f s", self._interval_s)
