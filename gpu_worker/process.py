"""One worker process: settings from the environment, clients, warm-up, then the loop until SIGTERM/SIGINT.

Its AWS calls are made by a helper process (aws_io.py), so botocore never holds the GIL the model needs.
Its first act is to give back what a crashed predecessor on its slot held (gpu_worker.held). While it holds
messages it marks itself busy for the supervisor (a file in STAGEHUB_STATE_DIR, see fleet.py), which protects
the instance from scale-in; it publishes its metrics (metrics.py) when in an Auto Scaling group. It exits 0
after a stop, 1 when its I/O process died, and 70 (EXIT_ABANDONED) when its watchdog found a dead thread or a
wedged compute loop: systemd and the supervisor restart it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from gpu_worker.aws_io import AwsIoProcess
from gpu_worker.fleet import BusyFlag
from gpu_worker.held import ReceiptJournal, release_left_over
from gpu_worker.metrics import WorkerMetrics
from gpu_worker.models import ModelRegistry
from gpu_worker.readiness import mark_ready_from_environment
from gpu_worker.seams import WorkerIo
from gpu_worker.worker import Worker
from shared.aws import client
from shared.models import bind_models
from shared.queues import QueueClient
from shared.resources import IN_QUEUE_VISIBILITY_S
from shared.settings import get_worker_settings
from shared.storage import BlobStore

log = logging.getLogger("gpu_worker")


def _queue_visibility(sqs: object, queue_url: str) -> int:
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])  # type: ignore[attr-defined]
        return int(attributes["Attributes"]["VisibilityTimeout"])
    except Exception:  # the heartbeat still works with the definition's value
        log.warning("could not read the queue's visibility timeout; using %d s", IN_QUEUE_VISIBILITY_S)
        return IN_QUEUE_VISIBILITY_S


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    try:
        settings = get_worker_settings()  # IN_QUEUE_URL and OUT_QUEUE_URL are required
    except RuntimeError as exc:
        log.error("%s", exc)
        return 2
    bind_models(settings)
    sqs = client("sqs", settings)
    visibility_s = _queue_visibility(sqs, settings.in_queue_url)
    journal = ReceiptJournal.from_environment()
    if journal is not None:  # before loading models: those executions can run elsewhere meanwhile
        release_left_over(journal, QueueClient(sqs), settings.in_queue_url, visibility_s)
    metrics = WorkerMetrics.from_settings(settings)
    busy_flag = BusyFlag.from_environment()

    def on_busy_change(busy: bool) -> None:
        if busy_flag is not None:
            busy_flag.set(busy)
        metrics.set_busy(busy)

    stop = threading.Event()
    io_lost = threading.Event()

    def on_io_exit() -> None:  # if it dies, stop: systemd restarts the worker
        io_lost.set()
        stop.set()

    aws_io = AwsIoProcess(settings, on_exit=on_io_exit)
    worker = Worker(
        settings,
        WorkerIo.build(settings, aws_io),
        registry=ModelRegistry(settings, BlobStore(client("s3", settings))),  # weights: parallel GETs, here
        visibility_s=visibility_s,
        metrics=metrics,
        on_busy_change=on_busy_change,
        on_ready=_on_ready,
        journal=journal,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics.start()
    try:
        log.info("loading and warming up models on %s", worker.registry.device)
        worker.registry.warm_up()
        log.info("polling %s", settings.in_queue_url)
        worker.run(stop, grace_s=settings.stop_grace_s)
    finally:
        if busy_flag is not None:
            busy_flag.set(False)
        metrics.stop()
        aws_io.close()
    log.info("stopped")
    return 1 if io_lost.is_set() else 0


def _on_ready() -> None:
    """Models loaded and warmed, first poll returned: the launch lifecycle hook may complete (gpu_worker/readiness)."""
    log.info("ready")
    mark_ready_from_environment()


if __name__ == "__main__":
    sys.exit(main())
