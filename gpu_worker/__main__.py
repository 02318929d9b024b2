"""`python -m gpu_worker`: the supervisor. One worker process per GPU (CUDA_VISIBLE_DEVICES), one on CPU.

It restarts a crashed worker with backoff and forwards SIGTERM/SIGINT, waiting for the workers to finish or
release their messages.

In an Auto Scaling group (ASG_NAME set and EC2 instance metadata answering) it also:
- protects the instance from scale-in while any worker process is busy (each marks itself with a file in the
  state directory it gets as STAGEHUB_STATE_DIR) and lifts the protection when all are idle;
- watches the instance's target lifecycle state: on "Terminated" it stops the workers as on SIGTERM, records
  lifecycle heartbeats while they finish, then completes the termination hook with CONTINUE and waits, without
  restarting anything, for the instance to go. A plain SIGTERM while the instance terminates completes it too.
Off EC2 none of this calls AWS.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from gpu_worker.fleet import (
    STATE_DIR_ENV,
    LifecycleWatch,
    ScaleInProtection,
    any_busy,
    clear_busy,
    instance_identity,
)
from gpu_worker.readiness import SLOT_ENV, InstanceHealth, set_unhealthy, slot_name

log = logging.getLogger("gpu_worker.supervisor")
MAX_BACKOFF_S = 60.0
HEALTHY_RUN_S = 60.0  # a worker that ran this long before exiting restarts after the shortest backoff again
POLL_S = 0.5
# Longest wait for the workers after a stop (each gives itself 25 s, then returns what is left): a hung worker is
# killed rather than keeping a terminating GPU instance alive on lifecycle heartbeats.
DRAIN_TIMEOUT_S = 300.0

Slot = int | None


def gpu_count() -> int:
    """GPUs on this machine, without importing torch (nvidia-smi -L lists one line per GPU)."""
    if os.environ.get("DEVICE", "auto") == "cpu" or not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def _spawn(slot: Slot, state_dir: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order nvidia-smi lists them in
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
        env["DEVICE"] = "cuda"
    if state_dir:
        env[STATE_DIR_ENV] = state_dir
    # Which ready file the process leaves (gpu_worker/readiness.py), and where its successor finds what it held
    # (gpu_worker/held.py).
    env[SLOT_ENV] = slot_name(slot)
    return subprocess.Popen([sys.executable, "-m", "gpu_worker.process"], env=env)


class Supervisor:
    """The worker processes of this machine, and the instance's part in its Auto Scaling group (when given)."""

    def __init__(
        self,
        slots: list[Slot],
        *,
        state_dir: str,
        spawn: Callable[[Slot, str], Any] = _spawn,
        protection: ScaleInProtection | None = None,
        lifecycle: LifecycleWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        health: InstanceHealth | None = None,
    ) -> None:
        self.slots = slots
        self.state_dir = state_dir
        self._spawn = spawn
        self.protection = protection
        self.lifecycle = lifecycle
        self._clock = clock
        self._sleep = sleep
        self._drain_timeout_s = drain_timeout_s
        self.health = health  # ready files and the crash-loop count (readiness.py)
        self.children: dict[Slot, Any] = {}
        self.backoff = dict.fromkeys(slots, 1.0)
        self._started_at: dict[Slot, float] = {}
        self._restart_at: dict[Slot, float] = {}
        self.stopping = False
        self.signalled = False  # a SIGTERM/SIGINT came (not only the lifecycle watch)
        self._stop_signal: int = signal.SIGTERM
        self._told: set[int] = set()  # pids the stop signal went to

    def start(self) -> None:
        if self.health is not None:
            self.health.started()
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: Slot) -> None:
        self.children[slot] = self._spawn(slot, self.state_dir)
        self._started_at[slot] = self._clock()

    def on_signal(self, signum: int, _frame: object = None) -> None:
        self.signalled = True
        self.request_stop(signum)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop: forward `signum` to the running workers (they finish or return their messages), restart none."""
        self.stopping = True
        self._stop_signal = signum
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)
                self._told.add(child.pid)

    def live_pids(self) -> list[int]:
        return [child.pid for child in self.children.values() if child.poll() is None]

    def tick(self) -> None:
        """One round: restart exited workers (after their backoff), set the scale-in protection, watch the group."""
        now = self._clock()
        for slot, child in list(self.children.items()):
            if self.stopping:
                return
            if slot in self._restart_at:
                if now >= self._restart_at[slot]:
                    del self._restart_at[slot]
                    self._start(slot)
                continue
            code = child.poll()
            if code is None:
                continue
            clear_busy(self.state_dir, child.pid)
            if self.health is not None:
                self.health.exited(slot, code)
            if now - self._started_at.get(slot, now) >= HEALTHY_RUN_S:  # an isolated crash: its executions wait least
                self.backoff[slot] = 1.0
            log.warning("worker on slot %s exited with %s; restarting in %.0f s", slot, code, self.backoff[slot])
            self._restart_at[slot] = now + self.backoff[slot]
            self.backoff[slot] = min(MAX_BACKOFF_S, self.backoff[slot] * 2)
        if self.stopping:
            return
        if self.protection is not None:
            self.protection.set(any_busy(self.state_dir, self.live_pids()))
        if self.lifecycle is not None and self.lifecycle.poll():
            log.info("the instance is terminating: stopping the workers")
            self.request_stop(signal.SIGTERM)

    def drain(self) -> None:
        """Wait for the workers to exit, recording lifecycle heartbeats meanwhile; kill them after the timeout."""
        for child in self.children.values():  # one started while the signal was handled has not heard it
            if child.pid not in self._told and child.poll() is None:
                child.send_signal(self._stop_signal)
                self._told.add(child.pid)
        deadline = self._clock() + self._drain_timeout_s
        while any(child.poll() is None for child in self.children.values()):
            if self.lifecycle is not None and self.lifecycle.terminating:
                self.lifecycle.heartbeat()
            if self._clock() >= deadline:
                for child in self.children.values():
                    if child.poll() is None:
                        log.error("worker %d did not stop within %.0f s: killing it", child.pid, self._drain_timeout_s)
                        child.kill()
                break
            self._sleep(POLL_S)
        for child in self.children.values():
            child.wait()
            clear_busy(self.state_dir, child.pid)

    def finish(self) -> None:
        """After the workers stopped: complete the termination hook if terminating, else lift the protection."""
        if self.lifecycle is not None and self.lifecycle.maybe_terminating():
            self.lifecycle.complete()
        elif self.protection is not None:
            self.protection.set(False)  # nothing runs here any more (a plain `systemctl stop`)

    def run(self) -> int:
        self.start()
        while not self.stopping:
            self._sleep(POLL_S)
            self.tick()
        self.drain()
        self.finish()
        if self.lifecycle is not None and self.lifecycle.terminating and not self.signalled:
            # Exiting would have systemd start the workers again on an instance that is going away.
            log.info("workers stopped; waiting for the instance to terminate")
            while not self.signalled:
                self._sleep(1.0)
        return 0


def _fleet(settings: Any) -> tuple[ScaleInProtection | None, LifecycleWatch | None]:
    """Scale-in protection and the lifecycle watch, in an Auto Scaling group on EC2; (None, None) elsewhere."""
    if settings is None or not settings.asg_name:
        return None, None
    instance_id = instance_identity()
    if not instance_id:
        log.warning("ASG_NAME is set but there is no EC2 instance metadata: no scale-in protection or lifecycle hook")
        return None, None
    from shared.aws import client

    autoscaling = client("autoscaling", settings)
    log.info("instance %s in group %s", instance_id, settings.asg_name)
    return (
        ScaleInProtection(autoscaling, settings.asg_name, instance_id),
        LifecycleWatch(autoscaling, settings.asg_name, settings.lifecycle_hook_name, instance_id),
    )


def _settings() -> Any:
    from shared.settings import get_worker_settings

    try:
        return get_worker_settings()
    except RuntimeError as exc:  # the workers report it; the supervisor still runs them
        log.error("%s", exc)
        return None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    slots: list[Slot] = list(range(gpu_count())) or [None]
    protection, lifecycle = _fleet(_settings())
    # Under systemd the state directory is the unit's RuntimeDirectory, where the launch hook's gate reads it.
    state_dir = os.environ.get(STATE_DIR_ENV) or tempfile.mkdtemp(prefix="stagehub-state-")
    report = set_unhealthy(protection.autoscaling, protection.instance_id) if protection is not None else None
    health = InstanceHealth(state_dir, slots, report_unhealthy=report)
    supervisor = Supervisor(slots, state_dir=state_dir, protection=protection, lifecycle=lifecycle, health=health)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    log.info("starting %d worker process(es) on %s", len(slots), "CPU" if slots == [None] else f"{len(slots)} GPU(s)")
    try:
        return supervisor.run()
    finally:
        if not os.environ.get(STATE_DIR_ENV):  # systemd removes its RuntimeDirectory itself
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
