"""The receipt handles a worker process holds, kept in a file where its restarted successor finds them.

A process killed without a goodbye (SIGKILL, OOM killer, a segfault in a native library) leaves its messages
invisible until their visibility lapses. The supervisor restarts the process on the same slot with the same
state directory (STAGEHUB_STATE_DIR, one per GPU slot: `held-<slot>.json`); the new process's first act is to
give every receipt listed there back to the queue with visibility 0, so those executions run again at once
(resuming at their first unfinished stage, see gpu_worker.jobs.Checkpoint) instead of a timeout later.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from gpu_worker.fleet import STATE_DIR_ENV
from gpu_worker.readiness import SLOT_ENV
from shared.errors import TransientFailure
from shared.queues import QueueClient

log = logging.getLogger(__name__)


class ReceiptJournal:
    """The file of one slot's held receipts, rewritten whole (atomically) on every change and after every
    heartbeat, with the time it was written: receipts older than the visibility timeout have come back by
    themselves (and may be another worker's by now), so a successor leaves those alone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ReceiptJournal | None:
        env = os.environ if environ is None else environ
        state_dir = env.get(STATE_DIR_ENV)
        if not state_dir:
            return None
        return cls(Path(state_dir) / f"held-{env.get(SLOT_ENV, 'cpu')}.json")

    def write(self, receipts: Iterable[str]) -> None:
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps({"at": time.time(), "receipts": sorted(receipts)}))
            os.replace(temporary, self.path)
        except OSError as exc:  # the messages still come back when their visibility lapses
            log.warning("could not record the held receipts in %s: %s", self.path, exc)

    def read(self, max_age_s: float) -> list[str]:
        """The receipts recorded within the last `max_age_s` seconds."""
        try:
            recorded = json.loads(self.path.read_text())
            if time.time() - float(recorded["at"]) > max_age_s:
                return []
            return [r for r in recorded["receipts"] if isinstance(r, str)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("could not read the held receipts in %s: %s", self.path, exc)
            return []


def release_left_over(journal: ReceiptJournal, queues: QueueClient, queue_url: str, visibility_s: float) -> int:
    """Give back (visibility 0) what a predecessor on this slot held; returns how many were given back."""
    released = 0
    for receipt in journal.read(max_age_s=visibility_s):
        try:
            queues.change_visibility(queue_url, receipt, 0)
            released += 1
        except TransientFailure as exc:  # done or expired meanwhile: nothing to give back
            log.info("a predecessor's receipt was not given back: %s", exc)
    journal.write([])
    if released:
        log.warning("gave back %d message(s) a previous worker process held", released)
    return released
