"""Keeps every held in-queue message invisible while the worker holds it, waiting ones included.

The in-queue's visibility timeout is short (shared.resources.IN_QUEUE_VISIBILITY_S, 60 s) so that a lost
instance's messages come back within about a minute; the heartbeat extends each held message every third of
it, so one missed beat does not let a message go while its worker lives. The held receipts are also written to
a `ReceiptJournal` (when the process has one) for a restarted successor to give back at once.
"""

from __future__ import annotations

import logging
import threading

from gpu_worker.held import ReceiptJournal
from shared.errors import TransientFailure
from shared.queues import QueueClient

log = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Every `visibility_s / 3` seconds, extends the visibility of each tracked receipt to `visibility_s`."""

    def __init__(
        self, queues: QueueClient, queue_url: str, visibility_s: int, journal: ReceiptJournal | None = None
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self._queues = queues
        self._queue_url = queue_url
        self._visibility_s = visibility_s
        self._journal = journal
        self._receipts: dict[str, str] = {}  # message id -> receipt handle
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def interval_s(self) -> float:
        return max(1.0, self._visibility_s / 3)

    @property
    def alive(self) -> bool:
        return self.is_alive() or self._stopped.is_set()

    def track(self, message_id: str, receipt_handle: str) -> None:
        with self._lock:
            self._receipts[message_id] = receipt_handle
            self._record()

    def untrack(self, message_id: str) -> None:
        with self._lock:
            if self._receipts.pop(message_id, None) is not None:
                self._record()

    def _record(self) -> None:
        if self._journal is not None:
            self._journal.write(self._receipts.values())

    def forget_all(self) -> None:
        """After every held message was given back: nothing for a successor to give back again."""
        with self._lock:
            self._receipts.clear()
            self._record()

    def held(self) -> int:
        with self._lock:
            return len(self._receipts)

    def receipts(self) -> list[str]:
        with self._lock:
            return list(self._receipts.values())

    def beat(self) -> None:
        with self._lock:
            receipts = list(self._receipts.values())
            self._record()  # the journal's time says until when these stay invisible
        for receipt in receipts:
            try:
                self._queues.change_visibility(self._queue_url, receipt, self._visibility_s)
            except TransientFailure as exc:
                log.warning("could not extend a message's visibility: %s", exc)

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # never let the thread die: held messages would come back while still worked on
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self._stopped.set()
