"""Readiness (C3) and crash loops, against moto's Auto Scaling and a fake IMDSv2 server: the launch hook is
completed with CONTINUE only once every worker process reported ready, with ABANDON when they fail or time out,
at once when the instance only goes to the warm pool; a crash loop sets the instance Unhealthy in its group.

moto keeps the group, its hooks and each instance's health; it does not implement CompleteLifecycleAction, so
`HookRecorder` answers that call after checking the hook and instance exist in moto's group. No test sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from gpu_worker import fleet, readiness
from gpu_worker.fleet import LifecycleWatch, target_lifecycle_state
from gpu_worker.readiness import (
    ABANDON,
    CONTINUE,
    InstanceHealth,
    LaunchGate,
    TerminationBackstop,
    instance_failed,
    instance_ready,
    mark_ready,
    mark_ready_from_environment,
    set_unhealthy,
    wait_in_service,
)
from tests.unit.worker.test_fleet import (  # noqa: F401 (fixture)
    GROUP,
    FakeClock,
    Fleet,
    _FakeImds,
    fake_imds,
    one_instance_group,
)

LAUNCH_HOOK = f"{GROUP}-launching"
TERMINATION_HOOK = f"{GROUP}-terminating"


class HookRecorder:
    """moto's Auto Scaling client, with CompleteLifecycleAction answered here (moto has none)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.completed: list[tuple[str, str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def complete_lifecycle_action(self, **params: str) -> dict[str, Any]:
        hooks = self._client.describe_lifecycle_hooks(AutoScalingGroupName=params["AutoScalingGroupName"])
        assert params["LifecycleHookName"] in {h["LifecycleHookName"] for h in hooks["LifecycleHooks"]}
        instances = self._client.describe_auto_scaling_instances(InstanceIds=[params["InstanceId"]])
        assert instances["AutoScalingInstances"], "not an instance of the group"
        self.completed.append((params["LifecycleHookName"], params["InstanceId"], params["LifecycleActionResult"]))
        return {}


class Group:
    """A one-instance group in moto with both hooks, and the instance's metadata in the fake IMDS."""

    def __init__(self) -> None:
        client = boto3.client("autoscaling", region_name="us-east-1")
        instance_id = one_instance_group(client)
        for hook, transition, default in (
            (LAUNCH_HOOK, "autoscaling:EC2_INSTANCE_LAUNCHING", ABANDON),
            (TERMINATION_HOOK, "autoscaling:EC2_INSTANCE_TERMINATING", CONTINUE),
        ):
            client.put_lifecycle_hook(
                AutoScalingGroupName=GROUP,
                LifecycleHookName=hook,
                LifecycleTransition=transition,
                DefaultResult=default,
            )
        self.autoscaling = HookRecorder(client)
        self.instance_id = instance_id
        self.metadata: dict[str, str] = {}

    def reset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Before each test: in service, healthy, no hook answered, this instance's metadata in the fake IMDS."""
        self.autoscaling.completed = []
        self.autoscaling.set_instance_health(InstanceId=self.instance_id, HealthStatus="Healthy")
        self.metadata = {"/latest/meta-data/instance-id": self.instance_id}
        monkeypatch.setattr(_FakeImds, "items", self.metadata)
        self.target_state("InService")

    def target_state(self, state: str) -> None:
        self.metadata["/latest/meta-data/autoscaling/target-lifecycle-state"] = state

    def health(self) -> str:
        instances = self.autoscaling.describe_auto_scaling_instances(InstanceIds=[self.instance_id])
        return str(instances["AutoScalingInstances"][0]["HealthStatus"])

    def gate(self, state_dir: Path, clock: FakeClock, timeout_s: float = 900) -> LaunchGate:
        return LaunchGate(
            self.autoscaling,
            GROUP,
            LAUNCH_HOOK,
            fleet.instance_identity() or "",  # through the IMDSv2 client, as on the instance
            is_ready=lambda: instance_ready(state_dir),
            has_failed=lambda: instance_failed(state_dir),
            read_state=target_lifecycle_state,
            timeout_s=timeout_s,
            clock=clock,
            sleep=clock.sleep,
        )


@pytest.fixture(scope="module")
def moto_group() -> Iterator[Group]:
    """One moto group for the module: moto's EC2 takes seconds to start."""
    with mock_aws():
        yield Group()


@pytest.fixture
def group(moto_group: Group, monkeypatch: pytest.MonkeyPatch, fake_imds: list[Any]) -> Group:  # noqa: F811
    moto_group.reset(monkeypatch)
    return moto_group


# --- ready files ---


def test_the_instance_is_ready_when_every_slot_reported(tmp_path: Path) -> None:
    health = InstanceHealth(tmp_path, [0, 1])
    assert not instance_ready(tmp_path)  # nothing started yet
    health.started()
    mark_ready(tmp_path, 0)
    assert not instance_ready(tmp_path)
    mark_ready_from_environment({"STAGEHUB_STATE_DIR": str(tmp_path), "STAGEHUB_SLOT": "1"})
    assert instance_ready(tmp_path)
    health.exited(1, 1)  # a restarted process must report again
    assert not instance_ready(tmp_path)
    mark_ready_from_environment({})  # not under the supervisor: nothing happens
    health.started()  # a new supervisor run starts from scratch
    assert not (tmp_path / "ready-0").exists()


def test_a_ready_mark_that_cannot_be_written_does_not_fail_the_worker(tmp_path: Path) -> None:
    mark_ready(tmp_path / "missing", 0)
    assert not instance_ready(tmp_path / "missing")


# --- the launch hook ---


def test_the_launch_hook_continues_once_every_worker_is_ready(group: Group, tmp_path: Path) -> None:
    clock = FakeClock()
    InstanceHealth(tmp_path, [0, None]).started()
    gate = group.gate(tmp_path, clock)
    calls = {"n": 0}

    def ready_later(seconds: float) -> None:  # both slots report while the gate polls
        clock.sleep(seconds)
        calls["n"] += 1
        if calls["n"] == 3:
            mark_ready(tmp_path, 0)
        if calls["n"] == 6:
            mark_ready(tmp_path, None)

    gate._sleep = ready_later
    assert gate.run() == CONTINUE
    assert group.autoscaling.completed == [(LAUNCH_HOOK, group.instance_id, CONTINUE)]
    assert clock.now == 6 * readiness.POLL_S  # not a poll before both were ready


def test_the_launch_hook_is_abandoned_when_not_ready_in_time(group: Group, tmp_path: Path) -> None:
    clock = FakeClock()
    InstanceHealth(tmp_path, [0]).started()
    assert group.gate(tmp_path, clock, timeout_s=60).run() == ABANDON
    assert group.autoscaling.completed == [(LAUNCH_HOOK, group.instance_id, ABANDON)]
    assert 60 <= clock.now < 60 + 2 * readiness.POLL_S


def test_a_crash_loop_abandons_the_launch_at_once(group: Group, tmp_path: Path) -> None:
    clock = FakeClock()
    health = InstanceHealth(tmp_path, [0], max_exits=3, clock=clock)
    health.started()
    for _ in range(3):
        health.exited(0, 1)
    assert group.gate(tmp_path, clock).run() == ABANDON
    assert clock.now == 0


def test_an_instance_going_to_the_warm_pool_continues_without_workers(group: Group, tmp_path: Path) -> None:
    group.target_state("Warmed:Stopped")
    assert group.gate(tmp_path, FakeClock()).run() == CONTINUE
    assert group.autoscaling.completed == [(LAUNCH_HOOK, group.instance_id, CONTINUE)]


def test_no_pending_action_is_not_an_error(tmp_path: Path) -> None:
    class Refusing:
        def complete_lifecycle_action(self, **_: str) -> None:
            raise RuntimeError("No active Lifecycle Action found with instance ID i-1")

    clock = FakeClock()
    mark_ready(tmp_path, 0)
    (tmp_path / "slots").write_text("0\n")
    gate = LaunchGate(
        Refusing(),
        GROUP,
        LAUNCH_HOOK,
        "i-1",
        is_ready=lambda: instance_ready(tmp_path),
        has_failed=lambda: False,
        read_state=lambda: "InService",
        timeout_s=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert gate.run() == CONTINUE  # a plain reboot: nothing to complete


def test_the_worker_waits_while_in_the_warm_pool() -> None:
    states = iter(["Warmed:Pending", "Warmed:Stopped", "InService"])
    slept: list[float] = []
    assert wait_in_service(lambda: next(states), slept.append, poll_s=5) == 0
    assert slept == [5, 5]
    assert wait_in_service(lambda: None, slept.append) == 0  # off EC2: at once


# --- crash loops ---


def test_a_crash_loop_sets_the_instance_unhealthy_in_its_group(group: Group, tmp_path: Path) -> None:
    clock = FakeClock()
    health = InstanceHealth(
        tmp_path, [0], report_unhealthy=set_unhealthy(group.autoscaling, group.instance_id), clock=clock
    )
    health.started()
    for _ in range(readiness.CRASH_LOOP_EXITS - 1):
        health.exited(0, 1)
        clock.now += 60
    assert group.health() == "Healthy"
    health.exited(0, 1)
    assert group.health() == "Unhealthy"
    assert instance_failed(tmp_path)
    assert "worker exits within" in (tmp_path / "failed").read_text()


def test_exits_spread_over_more_than_the_window_are_no_crash_loop(group: Group, tmp_path: Path) -> None:
    clock = FakeClock()
    health = InstanceHealth(
        tmp_path, [0], report_unhealthy=set_unhealthy(group.autoscaling, group.instance_id), clock=clock
    )
    health.started()
    for _ in range(3 * readiness.CRASH_LOOP_EXITS):
        health.exited(0, 1)
        clock.now += readiness.CRASH_LOOP_WINDOW_S / (readiness.CRASH_LOOP_EXITS - 1)
    assert group.health() == "Healthy"
    assert not instance_failed(tmp_path)


def test_the_supervisor_counts_its_workers_exits(group: Group, tmp_path: Path) -> None:
    reported: list[str] = []
    f = Fleet(tmp_path)
    f.supervisor.health = InstanceHealth(tmp_path, [0, 1], report_unhealthy=reported.append, clock=f.clock)
    f.supervisor.start()
    assert (tmp_path / "slots").read_text().split() == ["0", "1"]
    for _ in range(readiness.CRASH_LOOP_EXITS):
        f.supervisor.children[0].crash()
        f.supervisor.tick()  # notices the exit
        f.clock.sleep(f.supervisor.backoff[0])
        f.supervisor.tick()  # restarts it
    assert len(reported) == 1
    assert instance_failed(tmp_path)


def test_unhealthy_report_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def set_instance_health(self, **_: object) -> None:
            raise RuntimeError("throttled")

    set_unhealthy(Broken(), "i-1")("crash loop")
    assert "could not set i-1 Unhealthy" in caplog.text


# --- termination backstop ---


def test_the_backstop_stops_the_worker_and_completes_the_termination_hook(group: Group) -> None:
    group.target_state("Terminated")
    watch = LifecycleWatch(group.autoscaling, GROUP, TERMINATION_HOOK, group.instance_id)
    stopped: list[bool] = []
    assert TerminationBackstop(watch, lambda: stopped.append(True), sleep=lambda _: None).run(rounds=3)
    assert stopped == [True]
    assert group.autoscaling.completed == [(TERMINATION_HOOK, group.instance_id, CONTINUE)]


def test_the_backstop_does_nothing_while_in_service(group: Group) -> None:
    watch = LifecycleWatch(group.autoscaling, GROUP, TERMINATION_HOOK, group.instance_id)
    assert not TerminationBackstop(watch, lambda: pytest.fail("stopped"), sleep=lambda _: None).run(rounds=3)
    assert group.autoscaling.completed == []
