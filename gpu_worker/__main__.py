"""`python -m gpu_worker`: the supervisor. One worker process per GPU (CUDA_VISIBLE_DEVICES), one on CPU.

It restarts a crashed worker with backoff and forwards SIGTERM/SIGINT, waiting for the workers to finish or
release their messages.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

log = logging.getLogger("gpu_worker.supervisor")
MAX_BACKOFF_S = 60.0


def gpu_count() -> int:
    """GPUs on this machine, without importing torch (nvidia-smi -L lists one line per GPU)."""
    if os.environ.get("DEVICE", "auto") == "cpu" or not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def _spawn(slot: int | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
        env["DEVICE"] = "cuda"
    return subprocess.Popen([sys.executable, "-m", "gpu_worker.process"], env=env)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    slots: list[int | None] = list(range(gpu_count())) or [None]
    log.info("starting %d worker process(es) on %s", len(slots), "CPU" if slots == [None] else f"{len(slots)} GPU(s)")
    children = {slot: _spawn(slot) for slot in slots}
    backoff = dict.fromkeys(slots, 1.0)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None or stopping:
                continue
            log.warning("worker on slot %s exited with %s; restarting in %.0f s", slot, code, backoff[slot])
            time.sleep(backoff[slot])
            backoff[slot] = min(MAX_BACKOFF_S, backoff[slot] * 2)
            if not stopping:
                children[slot] = _spawn(slot)
    for child in children.values():
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
