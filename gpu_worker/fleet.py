"""The worker's part in its Auto Scaling group: instance metadata, scale-in protection and the termination hook.

- `imds_get` reads EC2 instance metadata with IMDSv2 (a session token first; the launch template requires it).
  Off EC2 it answers None within about a second, so nothing here needs to know where it runs.
- `ScaleInProtection` protects the instance from scale-in while any worker process holds a message and lifts
  the protection when all are idle. The supervisor owns it: each worker process (one per GPU) marks itself
  busy with a file `busy-<pid>` in the supervisor's state directory (`BusyFlag`), and the supervisor sets the
  protection from "any file there" (`any_busy`).
- `LifecycleWatch` notices that the group is terminating the instance (target lifecycle state "Terminated":
  scale-in, instance refresh, a failed health check), keeps the termination hook alive with heartbeats while the
  workers finish or return their messages, then completes the hook with CONTINUE so the instance goes at once.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_worker.fleet")

IMDS_BASE_URL = "http://169.254.169.254/latest/"
IMDS_TIMEOUT_S = 1.0
IMDS_TOKEN_TTL_S = 60
TERMINATED = "Terminated"  # the target lifecycle state of an instance the group is terminating
STATE_DIR_ENV = "STAGEHUB_STATE_DIR"
BUSY_PREFIX = "busy-"

# IMDS is link-local: never send its requests through an HTTP(S)_PROXY from the environment.
_IMDS_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def imds_get(path: str, *, timeout_s: float = IMDS_TIMEOUT_S) -> str | None:
    """The text at `meta-data/<path>` through IMDSv2, or None off EC2, on a missing item or any error."""
    try:
        token_request = urllib.request.Request(  # noqa: S310 (a fixed http:// address)
            IMDS_BASE_URL + "api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)},
        )
        with _IMDS_OPENER.open(token_request, timeout=timeout_s) as response:
            token = response.read().decode()
        request = urllib.request.Request(  # noqa: S310 (a fixed http:// address)
            IMDS_BASE_URL + "meta-data/" + path, headers={"X-aws-ec2-metadata-token": token}
        )
        with _IMDS_OPENER.open(request, timeout=timeout_s) as response:
            return str(response.read().decode().strip())
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:  # 404s, timeouts
        log.debug("instance metadata %s not available: %s", path, exc)
        return None


def instance_identity() -> str | None:
    """This EC2 instance's id (i-...), or None off EC2."""
    return imds_get("instance-id") or None


def target_lifecycle_state() -> str | None:
    """The Auto Scaling target lifecycle state (InService, Terminated, Warmed:Stopped, ...), or None."""
    return imds_get("autoscaling/target-lifecycle-state") or None


# --- busy files: worker processes -> supervisor ---


def busy_path(state_dir: str | os.PathLike[str], pid: int) -> Path:
    return Path(state_dir) / f"{BUSY_PREFIX}{pid}"


class BusyFlag:
    """A worker process's busy mark for the supervisor: the file `<state dir>/busy-<pid>` exists while busy."""

    def __init__(self, state_dir: str | os.PathLike[str], pid: int | None = None) -> None:
        self.path = busy_path(state_dir, os.getpid() if pid is None else pid)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> BusyFlag | None:
        """The flag in the supervisor's state directory, or None when not started by the supervisor."""
        state_dir = (os.environ if environ is None else environ).get(STATE_DIR_ENV)
        return cls(state_dir) if state_dir else None

    def set(self, busy: bool) -> None:
        try:
            if busy:
                self.path.touch()
            else:
                self.path.unlink(missing_ok=True)
        except OSError as exc:  # never fail a job over it; the supervisor cleans up after this process
            log.warning("could not %s the busy mark %s: %s", "set" if busy else "clear", self.path, exc)


def any_busy(state_dir: str | os.PathLike[str], pids: Iterable[int] | None = None) -> bool:
    """Whether a worker process is busy: any busy file, or any of `pids`' files when given (the live children)."""
    try:
        names = {entry.name for entry in os.scandir(state_dir)}
    except OSError:
        return False
    if pids is None:
        return any(name.startswith(BUSY_PREFIX) for name in names)
    return any(f"{BUSY_PREFIX}{pid}" in names for pid in pids)


def clear_busy(state_dir: str | os.PathLike[str], pid: int) -> None:
    """Remove an exited process's busy file (a process killed while busy cannot remove it itself)."""
    try:
        busy_path(state_dir, pid).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the busy mark of process %d: %s", pid, exc)


# --- Auto Scaling ---


class ScaleInProtection:
    """Scale-in protection of one instance, set only when it changes (the state starts unknown: the first call
    always goes out, so a protection left by an earlier run is lifted). A failed call is logged and retried on a
    later `set`, at most every `retry_s`."""

    def __init__(
        self,
        autoscaling: Any,
        group_name: str,
        instance_id: str,
        *,
        retry_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._autoscaling = autoscaling
        self.group_name = group_name
        self.instance_id = instance_id
        self._retry_s = retry_s
        self._clock = clock
        self.protected: bool | None = None  # as last set successfully; None: unknown
        self._failed_at: float | None = None

    @property
    def autoscaling(self) -> Any:
        """The Auto Scaling client (the supervisor reports a crash loop with it)."""
        return self._autoscaling

    def set(self, busy: bool) -> None:
        if busy == self.protected:
            return
        if self._failed_at is not None and self._clock() - self._failed_at < self._retry_s:
            return
        try:
            self._autoscaling.set_instance_protection(
                InstanceIds=[self.instance_id], AutoScalingGroupName=self.group_name, ProtectedFromScaleIn=busy
            )
        except Exception as exc:  # botocore errors, network; the next change or retry tries again
            log.warning("could not %s scale-in protection of %s: %s", "set" if busy else "lift", self.instance_id, exc)
            self._failed_at = self._clock()
            return
        self._failed_at = None
        self.protected = busy
        log.info("scale-in protection of %s %s", self.instance_id, "set (busy)" if busy else "lifted (idle)")


class LifecycleWatch:
    """Watches for the group terminating this instance and answers its termination lifecycle hook.

    `poll()` reads the target lifecycle state at most every `poll_interval_s`; `heartbeat()` records a hook
    heartbeat at most every `heartbeat_interval_s` (call it while waiting for the workers); `complete()` completes
    the hook with CONTINUE once. Errors (no pending action, say) are logged and ignored.
    """

    def __init__(
        self,
        autoscaling: Any,
        group_name: str,
        hook_name: str,
        instance_id: str,
        *,
        read_state: Callable[[], str | None] = target_lifecycle_state,
        poll_interval_s: float = 5.0,
        heartbeat_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._autoscaling = autoscaling
        self.group_name = group_name
        self.hook_name = hook_name
        self.instance_id = instance_id
        self._read_state = read_state
        self._poll_interval_s = poll_interval_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._clock = clock
        self._last_poll: float | None = None
        self._last_heartbeat: float | None = None
        self.terminating = False
        self.completed = False

    def poll(self, *, force: bool = False) -> bool:
        """True once the instance is being terminated (and from then on)."""
        if self.terminating:
            return True
        now = self._clock()
        if not force and self._last_poll is not None and now - self._last_poll < self._poll_interval_s:
            return False
        self._last_poll = now
        if self._read_state() == TERMINATED:
            log.info("instance %s is being terminated by %s", self.instance_id, self.group_name)
            self.terminating = True
            self._last_heartbeat = now  # the hook's timeout starts with the action
        return self.terminating

    def maybe_terminating(self) -> bool:
        """On a plain SIGTERM: is the instance (perhaps) terminating? Unknown state counts as yes."""
        if self.terminating:
            return True
        state = self._read_state()
        self.terminating = state == TERMINATED
        return state is None or self.terminating

    def heartbeat(self) -> None:
        if not self.hook_name or self.completed:
            return
        now = self._clock()
        if self._last_heartbeat is not None and now - self._last_heartbeat < self._heartbeat_interval_s:
            return
        self._last_heartbeat = now
        try:
            self._autoscaling.record_lifecycle_action_heartbeat(
                LifecycleHookName=self.hook_name, AutoScalingGroupName=self.group_name, InstanceId=self.instance_id
            )
        except Exception as exc:
            log.warning("could not record a lifecycle heartbeat for %s: %s", self.instance_id, exc)

    def complete(self) -> bool:
        """Complete the termination hook with CONTINUE (once); True if Auto Scaling took it."""
        if not self.hook_name:
            log.warning("no LIFECYCLE_HOOK_NAME: the termination hook is left to time out")
            return False
        if self.completed:
            return True
        try:
            self._autoscaling.complete_lifecycle_action(
                LifecycleHookName=self.hook_name,
                AutoScalingGroupName=self.group_name,
                InstanceId=self.instance_id,
                LifecycleActionResult="CONTINUE",
            )
        except Exception as exc:  # e.g. no pending action: a restart, or the lifecycle unit completed it first
            log.warning("could not complete lifecycle hook %s for %s: %s", self.hook_name, self.instance_id, exc)
            return False
        self.completed = True
        log.info("completed lifecycle hook %s for %s (CONTINUE)", self.hook_name, self.instance_id)
        return True
