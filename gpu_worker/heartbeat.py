"""Keeps every held in-queue message invisible while the worker holds it, waiting ones included."""

from __future__ import annotations

import logging
import threading

from shared.errors import TransientFailure
from shared.queues import QueueClient

log = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Every `visibility_s / 2` seconds, extends the visibility of each tracked receipt to `visibility_s`."""

    def __init__(self, queues: QueueClient, queue_url: str, visibility_s: int) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self._queues = queues
        self._queue_url = queue_url
        self._visibility_s = visibility_s
        self._receipts: dict[str, str] = {}  # message id -> receipt handle
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def interval_s(self) -> float:
        return max(1.0, self._visibility_s / 2)

    def track(self, message_id: str, receipt_handle: str) -> None:
        with self._lock:
            self._receipts[message_id] = receipt_handle

    def untrack(self, message_id: str) -> None:
        with self._lock:
            self._receipts.pop(message_id, None)

    def held(self) -> int:
        with self._lock:
            return len(self._receipts)

    def beat(self) -> None:
        with self._lock:
            receipts = list(self._receipts.values())
        for receipt in receipts:
            try:
                self._queues.change_visibility(self._queue_url, receipt, self._visibility_s)
            except TransientFailure as exc:
                log.warning("could not extend a message's visibility: %s", exc)

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        self._stopped.set()
