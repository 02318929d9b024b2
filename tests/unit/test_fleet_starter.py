"""The fleet starter against moto's SQS and Auto Scaling: a first submission to an idle fleet raises the desired
capacity at once; messages in flight count; the maximum bounds it; it never lowers a group; a failing fleet does
not stop the others."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.fleet import handler
from functions.fleet.starter import FleetRef, size_fleets, wanted_capacity

REGION = "us-east-1"


class Backend:
    def __init__(self, name: str, maximum: int = 3) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.autoscaling = boto3.client("autoscaling", region_name=REGION)
        self.queue_url = self.sqs.create_queue(QueueName=f"{name}-in")["QueueUrl"]
        self.group = f"stagehub-dev-{name}"
        self.autoscaling.create_launch_configuration(
            LaunchConfigurationName=f"lc-{name}", ImageId="ami-12c6146b", InstanceType="g5.xlarge"
        )
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=self.group,
            LaunchConfigurationName=f"lc-{name}",
            MinSize=0,
            MaxSize=maximum,
            DesiredCapacity=0,
            AvailabilityZones=[f"{REGION}a"],
        )

    def submit(self, count: int) -> None:
        for index in range(count):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=f'{{"executionId": "e{index}"}}')

    def take(self, count: int) -> None:
        """A worker takes messages: they are in flight, invisible to `ApproximateNumberOfMessages`."""
        self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=count, VisibilityTimeout=600)

    def desired(self) -> int:
        (group,) = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])[
            "AutoScalingGroups"
        ]
        return int(group["DesiredCapacity"])

    def ref(self, target: float = 4) -> FleetRef:
        return FleetRef(queue_url=self.queue_url, group_name=self.group, backlog_target=target)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def test_wanted_capacity_rounds_up_within_the_maximum() -> None:
    assert [wanted_capacity(backlog, 4, 3) for backlog in (0, 1, 4, 5, 8, 9, 100)] == [0, 1, 1, 2, 2, 3, 3]


def test_the_first_submission_to_an_idle_fleet_starts_an_instance(aws: None) -> None:
    backend = Backend("gpu-fleet")
    (sizing,) = size_fleets(backend.sqs, backend.autoscaling, [backend.ref()])
    assert (sizing.backlog, sizing.raised, backend.desired()) == (0, False, 0)
    backend.submit(1)
    (sizing,) = size_fleets(backend.sqs, backend.autoscaling, [backend.ref()])
    assert (sizing.backlog, sizing.wanted, backend.desired()) == (1, 1, 1)


def test_messages_in_flight_count_and_the_group_is_never_lowered(aws: None) -> None:
    backend = Backend("gpu-fleet")
    backend.submit(9)
    backend.take(8)  # one GPU process holds 8: 1 visible, 8 in flight
    (sizing,) = size_fleets(backend.sqs, backend.autoscaling, [backend.ref(target=4)])
    assert (sizing.backlog, backend.desired()) == (9, 3)
    backend.autoscaling.set_desired_capacity(AutoScalingGroupName=backend.group, DesiredCapacity=3)
    (sizing,) = size_fleets(backend.sqs, backend.autoscaling, [backend.ref(target=100)])
    assert (sizing.wanted, backend.desired()) == (1, 3)  # scale-in is the idle alarms' job


def test_a_failing_fleet_does_not_stop_the_others(aws: None, caplog: pytest.LogCaptureFixture) -> None:
    good = Backend("good")
    good.submit(2)
    missing = FleetRef(queue_url=good.queue_url, group_name="no-such-group", backlog_target=4)
    sizings = size_fleets(good.sqs, good.autoscaling, [missing, good.ref()])
    assert [s.group_name for s in sizings] == [good.group]
    assert good.desired() == 1
    assert "could not size no-such-group" in caplog.text


def test_the_handler_reads_the_fleets_from_the_schedules_event(aws: None) -> None:
    backend = Backend("gpu-fleet")
    backend.submit(5)
    event: dict[str, Any] = {
        "fleets": [{"queueUrl": backend.queue_url, "groupName": backend.group, "backlogTarget": 4}]
    }
    answer = handler.lambda_handler(event, None)
    assert answer == {"fleets": [{"group": backend.group, "backlog": 5, "desired": 0, "wanted": 2}]}
    assert backend.desired() == 2
    with pytest.raises(ValueError, match="backlogTarget"):
        FleetRef.from_event({"queueUrl": "q", "groupName": "g", "backlogTarget": 0})
