"""Sizes each GPU fleet up to its real backlog every minute, from the queue itself rather than from metrics.

Target tracking (infra/gpu_fleet/scaling.py) acts on CloudWatch's SQS metrics, which arrive minutes late and
cannot divide by zero in-service instances. This function, run by an EventBridge schedule every minute, reads
the in-queue's live counts (`GetQueueAttributes`: visible plus in flight) and raises the group's desired
capacity to `ceil(backlog / target)` (at most the group's maximum) when that is more than it has. It never
lowers it: scale-in belongs to the group's idle alarms, which respect protected (busy) instances.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("stagehub.fleet_starter")


@dataclass(frozen=True)
class FleetRef:
    """One backend's in-queue and Auto Scaling group, and its backlog target per instance."""

    queue_url: str
    group_name: str
    backlog_target: float

    @classmethod
    def from_event(cls, item: dict[str, Any]) -> FleetRef:
        target = float(item["backlogTarget"])
        if target <= 0:
            raise ValueError(f"backlogTarget must be positive: {target}")
        return cls(queue_url=str(item["queueUrl"]), group_name=str(item["groupName"]), backlog_target=target)


@dataclass(frozen=True)
class Sizing:
    group_name: str
    backlog: int
    desired: int
    wanted: int

    @property
    def raised(self) -> bool:
        return self.wanted > self.desired


def wanted_capacity(backlog: int, target: float, maximum: int) -> int:
    """Instances that hold `backlog` at `target` per instance, within 0..maximum."""
    return max(0, min(maximum, math.ceil(backlog / target)))


def backlog_of(sqs: Any, queue_url: str) -> int:
    """Messages waiting plus messages a worker holds (both are work the fleet has to do)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def size_fleet(sqs: Any, autoscaling: Any, fleet: FleetRef) -> Sizing:
    backlog = backlog_of(sqs, fleet.queue_url)
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.group_name])["AutoScalingGroups"]
    sizing = Sizing(
        group_name=fleet.group_name,
        backlog=backlog,
        desired=int(group["DesiredCapacity"]),
        wanted=wanted_capacity(backlog, fleet.backlog_target, int(group["MaxSize"])),
    )
    if sizing.raised:
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=fleet.group_name, DesiredCapacity=sizing.wanted, HonorCooldown=False
        )
        log.info("%s: backlog %d, desired %d -> %d", fleet.group_name, backlog, sizing.desired, sizing.wanted)
    return sizing


def size_fleets(sqs: Any, autoscaling: Any, fleets: list[FleetRef]) -> list[Sizing]:
    """Every fleet, each on its own: one failing (a throttled call, a group being replaced) does not stop the rest."""
    sizings = []
    for fleet in fleets:
        try:
            sizings.append(size_fleet(sqs, autoscaling, fleet))
        except Exception:
            log.exception("could not size %s", fleet.group_name)
    return sizings
