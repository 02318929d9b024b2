"""`GET /backends` (API.md "Backends"): per backend, the queue's depth and in-flight count (SQS attributes) and
an estimated wait from the fleet's recent speed (in-queue messages deleted over the last 15 minutes, a metric SQS
publishes to CloudWatch by itself: a worker deletes a message when its execution is done).

Approximate by design: SQS's counts are approximate, `workers` is estimated from the executions in flight (a
worker holds up to `max_batch_size` at a time), and without recent completions there is no estimate (null).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ServiceUnavailable
from shared.queues import QueueClient
from shared.settings import Settings

THROUGHPUT_WINDOW_S = 900
_VISIBLE = "ApproximateNumberOfMessages"
_IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"


class BackendStats:
    """Reads the figures of each backend; `cloudwatch` builds the CloudWatch client on first use."""

    def __init__(self, settings: Settings, queues: QueueClient, cloudwatch: Callable[[], Any]) -> None:
        self._settings = settings
        self._queues = queues
        self._cloudwatch = cloudwatch

    def all(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        return [self.one(name, url, now) for name, url in sorted(self._settings.backend_queues.items())]

    def one(self, name: str, queue_url: str, now: datetime) -> dict[str, Any]:
        attributes = self._queues.attributes(queue_url, [_VISIBLE, _IN_FLIGHT])
        queued, running = int(attributes.get(_VISIBLE, 0)), int(attributes.get(_IN_FLIGHT, 0))
        per_second = self.completions(queue_url.rstrip("/").rsplit("/", 1)[-1], now) / THROUGHPUT_WINDOW_S
        if queued == 0:
            estimate: int | None = 0
        elif per_second > 0:
            estimate = math.ceil(queued / per_second)
        else:
            estimate = None
        return {
            "name": name,
            "queued": queued,
            "running": running,
            "workers": math.ceil(running / self._settings.max_batch_size),
            "estimatedWaitSeconds": estimate,
        }

    def completions(self, queue_name: str, now: datetime) -> float:
        """In-queue messages deleted (executions done) over the last THROUGHPUT_WINDOW_S seconds."""
        try:
            response = self._cloudwatch().get_metric_statistics(
                Namespace="AWS/SQS",
                MetricName="NumberOfMessagesDeleted",
                Dimensions=[{"Name": "QueueName", "Value": queue_name}],
                StartTime=now - timedelta(seconds=THROUGHPUT_WINDOW_S),
                EndTime=now + timedelta(seconds=60),  # and the minute now under way
                Period=60,
                Statistics=["Sum"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise ServiceUnavailable(f"CloudWatch failed: {exc}") from exc
        return float(sum(point.get("Sum", 0.0) for point in response.get("Datapoints", [])))
