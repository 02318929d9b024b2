"""When this instance may serve, and when it is broken: the launch lifecycle hook waits for the workers (C3).

An instance counts as capacity only once every worker process on it has loaded and warmed its models and made
its first poll, and an instance whose workers keep crashing is handed back to the group to be replaced:

- each worker process calls `mark_ready(state_dir, slot)` once (the worker's `on_ready`), which leaves the file
  `ready-<slot>` in the supervisor's state directory; the supervisor lists the slots it started in `slots` and
  removes a slot's ready file when its process exits (`InstanceHealth`), so a restarted process reports again;
- `InstanceHealth` also counts the exits of worker processes: `max_exits` within `window_s` is a crash loop,
  and the instance is marked `failed` there and set Unhealthy in its group (`SetInstanceHealth`), which
  replaces it (the termination hook still lets the workers hand their messages back);
- `LaunchGate` (run as root by `stagehub-lifecycle.service`, `python -m gpu_worker.readiness`) completes the
  launch lifecycle hook with CONTINUE when the instance is ready, with ABANDON when it failed or is not ready
  within the timeout (Auto Scaling then terminates it and launches another), and with CONTINUE at once when the
  instance is only being prepared for the warm pool (the worker starts when it leaves the pool, and the hook is
  asked again then). After it, `TerminationBackstop` stops the worker and completes the termination hook when
  the group terminates the instance and the worker's own supervisor is not there to do it.

Everything here takes its clients, clock and sleep as arguments; `main()` wires the real ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gpu_worker.fleet import STATE_DIR_ENV, TERMINATED, LifecycleWatch, instance_identity, target_lifecycle_state

log = logging.getLogger("gpu_worker.readiness")

SLOT_ENV = "STAGEHUB_SLOT"  # the supervisor's slot of a worker process: a GPU index, or "cpu"
SLOTS_FILE = "slots"
FAILED_FILE = "failed"
READY_PREFIX = "ready-"
WARMED_PREFIX = "Warmed:"  # target lifecycle states of an instance going to (or sitting in) the warm pool
CONTINUE, ABANDON = "CONTINUE", "ABANDON"
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_S = 600.0
POLL_S = 5.0

Slot = int | None


def slot_name(slot: Slot) -> str:
    return "cpu" if slot is None else str(slot)


def mark_ready(state_dir: str | os.PathLike[str], slot: Slot | str) -> None:
    """A worker process is serving: models loaded and warmed, first poll made. Never raises."""
    name = slot if isinstance(slot, str) else slot_name(slot)
    try:
        (Path(state_dir) / f"{READY_PREFIX}{name}").touch()
    except OSError as exc:  # the worker serves anyway; the launch hook then times out and is abandoned
        log.warning("could not mark slot %s ready in %s: %s", name, state_dir, exc)


def mark_ready_from_environment(environ: dict[str, str] | None = None) -> None:
    """`mark_ready` for a worker process started by the supervisor (no-op otherwise)."""
    env = os.environ if environ is None else environ
    state_dir, slot = env.get(STATE_DIR_ENV), env.get(SLOT_ENV)
    if state_dir and slot:
        mark_ready(state_dir, slot)


def instance_ready(state_dir: str | os.PathLike[str]) -> bool:
    """Every slot the supervisor started has reported ready (False before the supervisor wrote its slots)."""
    try:
        expected = (Path(state_dir) / SLOTS_FILE).read_text().split()
    except OSError:
        return False
    return bool(expected) and all((Path(state_dir) / f"{READY_PREFIX}{name}").exists() for name in expected)


def instance_failed(state_dir: str | os.PathLike[str]) -> bool:
    return (Path(state_dir) / FAILED_FILE).exists()


class InstanceHealth:
    """The supervisor's side: the slots that must report ready, and the crash-loop count of their processes."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        slots: Iterable[Slot],
        *,
        report_unhealthy: Callable[[str], None] | None = None,
        max_exits: int = CRASH_LOOP_EXITS,
        window_s: float = CRASH_LOOP_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.slots = [slot_name(slot) for slot in slots]
        self._report_unhealthy = report_unhealthy
        self._max_exits = max_exits
        self._window_s = window_s
        self._clock = clock
        self._exits: list[float] = []
        self.failed = False

    def started(self) -> None:
        """Before the first worker starts: no slot is ready yet, these are the ones to wait for."""
        for name in self.slots:
            (self.state_dir / f"{READY_PREFIX}{name}").unlink(missing_ok=True)
        (self.state_dir / FAILED_FILE).unlink(missing_ok=True)
        (self.state_dir / SLOTS_FILE).write_text("\n".join(self.slots) + "\n")

    def exited(self, slot: Slot, code: int | None) -> None:
        """A worker process exited (the supervisor restarts it): it must report ready again; count the exit."""
        (self.state_dir / f"{READY_PREFIX}{slot_name(slot)}").unlink(missing_ok=True)
        now = self._clock()
        self._exits = [at for at in self._exits if now - at < self._window_s] + [now]
        if self.failed or len(self._exits) < self._max_exits:
            return
        self.failed = True
        reason = f"{len(self._exits)} worker exits within {self._window_s:.0f} s (last: slot {slot_name(slot)}, {code})"
        log.error("crash loop: %s; the instance is unhealthy", reason)
        (self.state_dir / FAILED_FILE).write_text(reason + "\n")
        if self._report_unhealthy is not None:
            self._report_unhealthy(reason)


def set_unhealthy(autoscaling: Any, instance_id: str) -> Callable[[str], None]:
    """A `report_unhealthy` that has the group replace this instance (errors are logged: the hook still times out)."""

    def report(reason: str) -> None:
        try:
            autoscaling.set_instance_health(
                InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False
            )
            log.info("set %s Unhealthy: %s", instance_id, reason)
        except Exception as exc:  # botocore errors, network
            log.error("could not set %s Unhealthy: %s", instance_id, exc)

    return report


class LaunchGate:
    """Answers the launch lifecycle hook of this instance once: ready → CONTINUE, failed or too late → ABANDON."""

    def __init__(
        self,
        autoscaling: Any,
        group_name: str,
        hook_name: str,
        instance_id: str,
        *,
        is_ready: Callable[[], bool],
        has_failed: Callable[[], bool],
        read_state: Callable[[], str | None] = target_lifecycle_state,
        timeout_s: float,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._autoscaling = autoscaling
        self.group_name = group_name
        self.hook_name = hook_name
        self.instance_id = instance_id
        self._is_ready = is_ready
        self._has_failed = has_failed
        self._read_state = read_state
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep

    def decide(self) -> str:
        """Wait for the answer: CONTINUE (ready, or only going to the warm pool) or ABANDON (failed, timed out)."""
        deadline = self._clock() + self._timeout_s
        while True:
            state = self._read_state() or ""
            if state.startswith(WARMED_PREFIX):
                log.info("target state %s: prepared for the warm pool", state)
                return CONTINUE
            if self._has_failed():
                log.error("the workers failed before becoming ready")
                return ABANDON
            if self._is_ready():
                log.info("every worker process is ready")
                return CONTINUE
            if self._clock() >= deadline:
                log.error("the workers were not ready within %.0f s", self._timeout_s)
                return ABANDON
            self._sleep(self._poll_s)

    def run(self) -> str:
        result = self.decide()
        try:
            self._autoscaling.complete_lifecycle_action(
                LifecycleHookName=self.hook_name,
                AutoScalingGroupName=self.group_name,
                InstanceId=self.instance_id,
                LifecycleActionResult=result,
            )
            log.info("completed launch hook %s with %s", self.hook_name, result)
        except Exception as exc:  # no pending action: a plain reboot of an instance in service
            log.info("no launch action to complete (%s): %s", result, exc)
        return result


class TerminationBackstop:
    """When the group terminates the instance: stop the worker unit, then complete the termination hook."""

    def __init__(
        self,
        watch: LifecycleWatch,
        stop_worker: Callable[[], None],
        *,
        poll_s: float = POLL_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._watch = watch
        self._stop_worker = stop_worker
        self._poll_s = poll_s
        self._sleep = sleep

    def run(self, rounds: int | None = None) -> bool:
        """Poll until terminating (or `rounds` polls); True once the hook was answered."""
        done = 0
        while rounds is None or done < rounds:
            done += 1
            if self._watch.poll(force=True):
                log.info("terminating (%s): stopping the worker", TERMINATED)
                self._stop_worker()
                for _ in range(5):  # the supervisor may have completed it already: then this fails, harmlessly
                    if self._watch.complete():
                        break
                    self._sleep(self._poll_s)
                return True
            self._sleep(self._poll_s)
        return False


def _stop_worker_unit() -> None:
    subprocess.run(["systemctl", "stop", "stagehub-worker.service"], check=False)


def main(argv: list[str] | None = None) -> int:
    """`python -m gpu_worker.readiness lifecycle|unhealthy|wait-in-service` on an instance (systemd units)."""
    parser = argparse.ArgumentParser(prog="python -m gpu_worker.readiness")
    parser.add_argument("command", choices=("lifecycle", "unhealthy", "wait-in-service"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s readiness %(levelname)s %(message)s")
    if args.command == "wait-in-service":
        return wait_in_service()
    from shared.aws import client
    from shared.settings import get_worker_settings

    settings = get_worker_settings()
    instance_id = instance_identity()
    if not instance_id or not settings.asg_name:
        log.warning("not an instance of an Auto Scaling group: nothing to do")
        return 0
    autoscaling = client("autoscaling", settings)
    if args.command == "unhealthy":  # the worker unit failed too often (systemd OnFailure=)
        set_unhealthy(autoscaling, instance_id)("the worker unit keeps failing")
        return 0
    state_dir = settings.state_dir
    LaunchGate(
        autoscaling,
        settings.asg_name,
        settings.launch_hook_name,
        instance_id,
        is_ready=lambda: instance_ready(state_dir),
        has_failed=lambda: instance_failed(state_dir),
        timeout_s=settings.ready_timeout_s,
    ).run()
    watch = LifecycleWatch(autoscaling, settings.asg_name, settings.lifecycle_hook_name, instance_id)
    TerminationBackstop(watch, _stop_worker_unit).run()
    return 0


def wait_in_service(
    read_state: Callable[[], str | None] = target_lifecycle_state,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = POLL_S,
) -> int:
    """Block while the instance sits in the warm pool, so the worker takes messages only once in service."""
    while (read_state() or "").startswith(WARMED_PREFIX):
        sleep(poll_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
