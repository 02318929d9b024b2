"""The worker in its Auto Scaling group: instance metadata, scale-in protection from the busy files of all worker
processes, and the termination lifecycle hook (stop the workers, heartbeat, complete with CONTINUE).

No test sleeps: the supervisor gets a fake clock and sleep, fake children, and a fake IMDS."""

from __future__ import annotations

import http.server
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from gpu_worker import __main__ as supervisor_module
from gpu_worker import fleet
from gpu_worker.__main__ import Supervisor
from gpu_worker.fleet import BusyFlag, LifecycleWatch, ScaleInProtection, any_busy, clear_busy
from tests.unit.execution_fakes import unit_settings
from tests.unit.worker.fakes import ScriptedRunner
from tests.unit.worker.test_worker_failures import Harness

GROUP = "stagehub-dev-gpu-fleet"
HOOK = "stagehub-dev-gpu-fleet-terminating"
INSTANCE = "i-0123456789abcdef0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _autoscaling() -> Any:
    return boto3.client("autoscaling", region_name="us-east-1")


def _protection_params(busy: bool) -> dict[str, Any]:
    return {"InstanceIds": [INSTANCE], "AutoScalingGroupName": GROUP, "ProtectedFromScaleIn": busy}


HOOK_PARAMS = {"LifecycleHookName": HOOK, "AutoScalingGroupName": GROUP, "InstanceId": INSTANCE}
COMPLETE_PARAMS = HOOK_PARAMS | {"LifecycleActionResult": "CONTINUE"}


# --- instance metadata (IMDSv2) ---


class _FakeImds(http.server.BaseHTTPRequestHandler):
    token = "tok-123"
    items = {"/latest/meta-data/instance-id": INSTANCE}
    seen: list[tuple[str, str, str | None]] = []

    def do_PUT(self) -> None:
        self.seen.append(("PUT", self.path, self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")))
        self._answer(200, self.token if self.path == "/latest/api/token" else "")

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("X-aws-ec2-metadata-token")))
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self._answer(401, "")
        elif self.path in self.items:
            self._answer(200, self.items[self.path])
        else:
            self._answer(404, "")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str | None]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(fleet, "IMDS_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/latest/")
    _FakeImds.seen = []
    try:
        yield _FakeImds.seen
    finally:
        server.shutdown()
        server.server_close()


def test_instance_identity_uses_an_imdsv2_token(fake_imds: list[tuple[str, str, str | None]]) -> None:
    assert fleet.instance_identity() == INSTANCE
    assert fake_imds == [
        ("PUT", "/latest/api/token", str(fleet.IMDS_TOKEN_TTL_S)),
        ("GET", "/latest/meta-data/instance-id", _FakeImds.token),
    ]


def test_a_missing_metadata_item_is_none(fake_imds: list[tuple[str, str, str | None]]) -> None:
    assert fleet.target_lifecycle_state() is None  # 404: not in an Auto Scaling group


def test_off_ec2_there_is_no_instance_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:  # a closed port: the connection is refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setattr(fleet, "IMDS_BASE_URL", f"http://127.0.0.1:{port}/latest/")
    assert fleet.instance_identity() is None


# --- busy files ---


def test_busy_flags_of_several_processes(tmp_path: Path) -> None:
    first, second = BusyFlag(tmp_path, pid=101), BusyFlag(tmp_path, pid=102)
    assert not any_busy(tmp_path)
    first.set(True)
    second.set(True)
    assert any_busy(tmp_path)
    first.set(False)
    assert any_busy(tmp_path)
    assert not any_busy(tmp_path, pids=[101])  # only the live processes' files count
    second.set(False)
    second.set(False)  # clearing twice is fine
    assert not any_busy(tmp_path)
    first.set(True)
    clear_busy(tmp_path, 101)  # the supervisor cleans up after a process that died busy
    assert not any_busy(tmp_path)
    assert not any_busy(tmp_path / "missing")


def test_the_busy_flag_comes_from_the_supervisors_environment(tmp_path: Path) -> None:
    assert BusyFlag.from_environment({}) is None
    flag = BusyFlag.from_environment({fleet.STATE_DIR_ENV: str(tmp_path)})
    assert flag is not None
    flag.set(True)
    assert [p.name for p in tmp_path.iterdir()] == [flag.path.name]
    assert flag.path.name.startswith("busy-")


# --- scale-in protection ---


def test_protection_is_set_only_when_it_changes() -> None:
    client = _autoscaling()
    protection = ScaleInProtection(client, GROUP, INSTANCE)
    with Stubber(client) as stub:  # an unexpected call fails the test
        stub.add_response("set_instance_protection", {}, _protection_params(False))
        stub.add_response("set_instance_protection", {}, _protection_params(True))
        stub.add_response("set_instance_protection", {}, _protection_params(False))
        for busy in (False, False, True, True, True, False, False):
            protection.set(busy)
        stub.assert_no_pending_responses()
    assert protection.protected is False


def test_a_failed_protection_call_is_logged_and_retried_later(caplog: pytest.LogCaptureFixture) -> None:
    client, clock = _autoscaling(), FakeClock()
    protection = ScaleInProtection(client, GROUP, INSTANCE, retry_s=10, clock=clock)
    with Stubber(client) as stub, caplog.at_level(logging.WARNING, logger="gpu_worker.fleet"):
        stub.add_client_error("set_instance_protection", "Throttling", "slow down", http_status_code=400)
        protection.set(True)
        assert protection.protected is None
        clock.now += 5
        protection.set(True)  # too soon: no call
        stub.add_response("set_instance_protection", {}, _protection_params(True))
        clock.now += 5
        protection.set(True)
        stub.assert_no_pending_responses()
    assert protection.protected is True
    assert "could not set scale-in protection" in caplog.text


def one_instance_group(client: Any) -> str:
    """A group named GROUP of one instance in moto (inside `mock_aws`); returns the instance's id."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    client.create_launch_configuration(
        LaunchConfigurationName="lc",
        ImageId=ec2.describe_images()["Images"][0]["ImageId"],
        InstanceType="g5.xlarge",
    )
    client.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchConfigurationName="lc",
        MinSize=1,
        MaxSize=1,
        AvailabilityZones=["us-east-1a"],
    )
    return str(client.describe_auto_scaling_instances()["AutoScalingInstances"][0]["InstanceId"])


def test_protection_against_the_group_api() -> None:
    with mock_aws():
        client = _autoscaling()
        instance_id = one_instance_group(client)
        protection = ScaleInProtection(client, GROUP, instance_id)

        def protected() -> bool:
            instances = client.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
            return bool(instances[0]["ProtectedFromScaleIn"])

        protection.set(True)
        assert protected()
        protection.set(False)
        assert not protected()


# --- the supervisor ---


class FakeChild:
    """A worker process: exits `exit_after_s` after the stop signal (or when `crash()`ed)."""

    next_pid = 1000

    def __init__(self, slot: int | None, clock: FakeClock, exit_after_s: float = 1.0) -> None:
        FakeChild.next_pid += 1
        self.pid = FakeChild.next_pid
        self.slot = slot
        self.clock = clock
        self.exit_after_s = exit_after_s
        self.signals: list[int] = []
        self.returncode: int | None = None
        self._exit_at: float | None = None
        self.killed = False

    def poll(self) -> int | None:
        if self.returncode is None and self._exit_at is not None and self.clock() >= self._exit_at:
            self.returncode = 0
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if self._exit_at is None:
            self._exit_at = self.clock() + self.exit_after_s

    def crash(self) -> None:
        self.returncode = 1

    def kill(self) -> None:
        self.killed = True
        self.returncode = -9

    def wait(self) -> int:
        assert self.poll() is not None, "waited on a running child"
        return self.returncode  # type: ignore[return-value]


class Fleet:
    """A supervisor on two GPUs with fake children, clock and sleep."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        protection: ScaleInProtection | None = None,
        lifecycle: LifecycleWatch | None = None,
        exit_after_s: float = 1.0,
    ) -> None:
        self.clock = FakeClock()
        self.spawned: list[FakeChild] = []
        self.on_sleep: list[Any] = []

        def spawn(slot: int | None, state_dir: str) -> FakeChild:
            assert state_dir == str(tmp_path)
            child = FakeChild(slot, self.clock, exit_after_s)
            self.spawned.append(child)
            return child

        def sleep(seconds: float) -> None:
            self.clock.sleep(seconds)
            for hook in self.on_sleep:
                hook()

        self.supervisor = Supervisor(
            [0, 1],
            state_dir=str(tmp_path),
            spawn=spawn,
            protection=protection,
            lifecycle=lifecycle,
            clock=self.clock,
            sleep=sleep,
        )
        self.state_dir = tmp_path

    def flag(self, slot: int) -> BusyFlag:
        return BusyFlag(self.state_dir, pid=self.supervisor.children[slot].pid)


def test_protection_reflects_any_busy_worker_process(tmp_path: Path) -> None:
    client = _autoscaling()
    f = Fleet(tmp_path, protection=ScaleInProtection(client, GROUP, INSTANCE))
    f.supervisor.start()
    with Stubber(client) as stub:
        stub.add_response("set_instance_protection", {}, _protection_params(False))  # first: a known state
        stub.add_response("set_instance_protection", {}, _protection_params(True))
        stub.add_response("set_instance_protection", {}, _protection_params(False))
        f.supervisor.tick()
        f.flag(0).set(True)
        f.supervisor.tick()
        f.flag(1).set(True)
        f.supervisor.tick()  # still busy: no call
        f.flag(0).set(False)
        f.supervisor.tick()  # GPU 1 still busy: no call
        f.flag(1).set(False)
        f.supervisor.tick()
        f.supervisor.tick()
        stub.assert_no_pending_responses()


def test_a_worker_that_dies_busy_does_not_keep_the_instance_protected(tmp_path: Path) -> None:
    client = _autoscaling()
    f = Fleet(tmp_path, protection=ScaleInProtection(client, GROUP, INSTANCE))
    f.supervisor.start()
    with Stubber(client) as stub:
        stub.add_response("set_instance_protection", {}, _protection_params(True))
        stub.add_response("set_instance_protection", {}, _protection_params(False))
        f.flag(0).set(True)
        f.supervisor.tick()
        f.supervisor.children[0].crash()  # killed (OOM, SIGKILL) while holding a message
        f.supervisor.tick()
        stub.assert_no_pending_responses()
    assert not any_busy(tmp_path)


def test_crashed_workers_restart_with_backoff(tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    f.supervisor.start()
    assert [c.slot for c in f.spawned] == [0, 1]
    f.supervisor.children[1].crash()
    f.supervisor.tick()  # seen at t=0: restart due at t=1
    f.clock.now = 0.5
    f.supervisor.tick()
    assert len(f.spawned) == 2
    f.clock.now = 1.0
    f.supervisor.tick()
    assert [c.slot for c in f.spawned] == [0, 1, 1]
    f.supervisor.children[1].crash()
    f.supervisor.tick()  # second crash: 2 s
    f.clock.now = 2.9
    f.supervisor.tick()
    assert len(f.spawned) == 3
    f.clock.now = 3.0
    f.supervisor.tick()
    assert len(f.spawned) == 4
    assert f.supervisor.backoff == {0: 1.0, 1: 4.0}


def test_sigterm_is_forwarded_and_the_workers_are_waited_for(tmp_path: Path) -> None:
    f = Fleet(tmp_path, exit_after_s=20)
    f.on_sleep.append(lambda: f.clock.now >= 3 and not f.supervisor.stopping and f.supervisor.on_signal(15))  # type: ignore[func-returns-value]
    assert f.supervisor.run() == 0
    assert [c.signals for c in f.spawned] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert all(c.returncode == 0 for c in f.spawned)
    assert f.clock.now >= 23
    assert len(f.spawned) == 2  # nothing restarted while stopping


def test_a_worker_that_does_not_stop_is_killed_after_the_drain_timeout(tmp_path: Path) -> None:
    f = Fleet(tmp_path, exit_after_s=10_000)
    f.supervisor.start()
    f.supervisor.on_signal(signal.SIGINT)
    f.supervisor.drain()
    assert [c.signals for c in f.spawned] == [[signal.SIGINT], [signal.SIGINT]]
    assert all(c.killed for c in f.spawned)
    assert f.clock.now == pytest.approx(supervisor_module.DRAIN_TIMEOUT_S, abs=1)


def test_lifecycle_terminated_stops_the_workers_and_completes_the_hook(tmp_path: Path) -> None:
    client = _autoscaling()
    clock_holder: list[FakeClock] = []
    states = iter(["InService", "InService"])

    def read_state() -> str | None:
        return next(states, "Terminated")

    lifecycle = LifecycleWatch(client, GROUP, HOOK, INSTANCE, read_state=read_state, clock=lambda: clock_holder[0]())
    f = Fleet(tmp_path, lifecycle=lifecycle, exit_after_s=130)  # the workers take over two heartbeat intervals
    clock_holder.append(f.clock)
    events: list[tuple[str, float]] = []

    def after_completion() -> None:  # systemd stops the supervisor once the instance goes
        if lifecycle.completed and not f.supervisor.signalled:
            events.append(("idle", f.clock.now))
            f.supervisor.on_signal(signal.SIGTERM)

    f.on_sleep.append(after_completion)
    with Stubber(client) as stub:
        stub.add_response("record_lifecycle_action_heartbeat", {}, HOOK_PARAMS)
        stub.add_response("record_lifecycle_action_heartbeat", {}, HOOK_PARAMS)
        stub.add_response("complete_lifecycle_action", {}, COMPLETE_PARAMS)
        assert f.supervisor.run() == 0
        stub.assert_no_pending_responses()
    # read at 0.5 s and 5.5 s (InService), at 10.5 s: Terminated
    assert [c.signals for c in f.spawned] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert all(c.returncode == 0 for c in f.spawned)
    assert len(f.spawned) == 2  # no restart on a terminating instance
    assert lifecycle.completed
    assert events
    assert events[0][1] >= 10.5 + 130  # completed only after the workers stopped


def test_a_plain_sigterm_while_terminating_completes_the_hook(tmp_path: Path) -> None:
    client = _autoscaling()
    state = {"now": "InService"}
    lifecycle = LifecycleWatch(client, GROUP, HOOK, INSTANCE, read_state=lambda: state["now"])
    f = Fleet(tmp_path, lifecycle=lifecycle)

    def systemctl_stop() -> None:  # the lifecycle unit saw "Terminated" first and stopped the worker
        if f.clock.now >= 2 and not f.supervisor.stopping:
            state["now"] = "Terminated"
            f.supervisor.on_signal(signal.SIGTERM)

    f.on_sleep.append(systemctl_stop)
    with Stubber(client) as stub:
        stub.add_client_error(
            "complete_lifecycle_action", "ValidationError", "No active Lifecycle Action found", http_status_code=400
        )
        assert f.supervisor.run() == 0  # the error (already completed elsewhere) is logged and ignored
        stub.assert_no_pending_responses()


def test_a_plain_sigterm_in_service_lifts_the_protection_and_completes_nothing(tmp_path: Path) -> None:
    client = _autoscaling()
    lifecycle = LifecycleWatch(client, GROUP, HOOK, INSTANCE, read_state=lambda: "InService")
    f = Fleet(tmp_path, protection=ScaleInProtection(client, GROUP, INSTANCE), lifecycle=lifecycle)
    f.on_sleep.append(lambda: f.clock.now >= 2 and not f.supervisor.stopping and f.supervisor.on_signal(15))  # type: ignore[func-returns-value]
    f.on_sleep.append(lambda: f.clock.now == 1.0 and f.flag(0).set(True))  # type: ignore[func-returns-value]
    with Stubber(client) as stub:
        stub.add_response("set_instance_protection", {}, _protection_params(False))
        stub.add_response("set_instance_protection", {}, _protection_params(True))
        stub.add_response("set_instance_protection", {}, _protection_params(False))  # after the workers stopped
        assert f.supervisor.run() == 0
        stub.assert_no_pending_responses()


def test_the_lifecycle_watch_polls_every_five_seconds() -> None:
    clock, reads = FakeClock(), []

    def read_state() -> str | None:
        reads.append(clock.now)
        return "InService"

    lifecycle = LifecycleWatch(_autoscaling(), GROUP, HOOK, INSTANCE, read_state=read_state, clock=clock)
    for _ in range(25):
        lifecycle.poll()
        clock.now += 0.5
    assert reads == [0.0, 5.0, 10.0]
    assert not lifecycle.terminating


def test_off_ec2_or_without_a_group_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("must not be called")

    monkeypatch.setattr(supervisor_module, "instance_identity", never)
    assert supervisor_module._fleet(unit_settings(asg_name="")) == (None, None)
    assert supervisor_module._fleet(None) == (None, None)
    monkeypatch.setattr(supervisor_module, "instance_identity", lambda: None)  # ASG_NAME set, but not on EC2
    monkeypatch.setattr("shared.aws.client", never)
    assert supervisor_module._fleet(unit_settings(asg_name=GROUP)) == (None, None)


def test_on_ec2_in_a_group_the_supervisor_gets_protection_and_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "instance_identity", lambda: INSTANCE)
    protection, lifecycle = supervisor_module._fleet(unit_settings(asg_name=GROUP, lifecycle_hook_name=HOOK))
    assert protection is not None
    assert lifecycle is not None
    assert (protection.group_name, protection.instance_id) == (GROUP, INSTANCE)
    assert (lifecycle.group_name, lifecycle.hook_name, lifecycle.instance_id) == (GROUP, HOOK, INSTANCE)


# --- the worker's busy callback ---


def test_the_worker_reports_busy_on_its_first_job_and_idle_after_its_last(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    changes: list[bool] = []
    h.worker.on_busy_change = changes.append
    h.submit("e1", "a")
    h.submit("e2", "b")
    h.worker.intake.poll_once(wait_s=0)
    assert changes == [True]  # 0 -> 2 open jobs: one report
    h.run_until_idle()
    assert changes == [True, False]
    h.submit("e3", "c")
    h.run_until_idle()
    assert changes == [True, False, True, False]


def test_a_released_job_also_ends_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import TransientFailure

    def behaviour(prompts: list[str]) -> None:
        raise TransientFailure("S3 throttled")

    h = Harness(monkeypatch, ScriptedRunner(behaviour))
    changes: list[bool] = []
    h.worker.on_busy_change = changes.append
    h.submit("e1", "x")
    h.run_until_idle()
    assert changes == [True, False]
    assert h.worker.open_jobs() == 0


def test_shutdown_with_open_jobs_ends_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    changes: list[bool] = []
    h.worker.on_busy_change = changes.append
    h.submit("e1", "x")
    h.worker.intake.poll_once(wait_s=0)
    h.worker.shutdown(grace_s=0)
    assert changes == [True, False]


def test_a_failing_busy_callback_does_not_break_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())

    def broken(busy: bool) -> None:
        raise OSError("disk full")

    h.worker.on_busy_change = broken
    h.submit("e1", "x")
    h.run_until_idle()
    assert h.finished("e1")["status"] == "SUCCEEDED"


def test_busy_changes_drive_the_busy_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As process.py wires it: the worker's callback sets and clears this process's busy file."""
    h = Harness(monkeypatch, ScriptedRunner())
    flag = BusyFlag(tmp_path, pid=4242)
    seen: list[bool] = []

    def on_busy_change(busy: bool) -> None:
        flag.set(busy)
        seen.append(any_busy(tmp_path))

    h.worker.on_busy_change = on_busy_change
    h.submit("e1", "x")
    h.run_until_idle()
    assert seen == [True, False]
    assert not any_busy(tmp_path)
