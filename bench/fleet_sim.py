"""The GPU fleet simulator: the synthesized template's scaling, one second at a time, over a burst and a day.

`python -m bench.fleet_sim [--template T.json] [--json OUT]` (also a part of `python -m bench`). The scaling
parameters come from the template the CDK app synthesizes (group sizes, target, idle minutes, the starter's
schedule, hook timeouts); the times are configured (`Timings`: instance boot with the offline install, model
download and warm-up, one execution on one instance), as measured or as ops expect them.

The model, per second: executions arrive in the in-queue; an in-service instance takes the oldest waiting one
and holds it for `execution_s` (its worker's batching is folded into that figure); backlog = waiting + held.
- the starter (every `starter_period_s`) raises the desired capacity to ceil(backlog / target), at most the max;
- target tracking (scale-out only) acts on CloudWatch datapoints that arrive `metric_delay_s` late, when three
  in a row exceed the target; it seldom matters once the starter has acted;
- the idle alarm sets the group to its minimum after `idle_minutes` datapoints with no backlog; the shrink alarm
  removes one instance per minute after as many datapoints under half the target per in-service instance;
- the group launches instances up to the desired capacity; they are in service `boot_s + model_load_s` after
  launch (the launch hook waits for readiness); above it, it terminates booting ones first, then idle ones
  (busy ones are protected). An instance is billed from launch to termination.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class ScalingParams:
    min_size: int
    max_size: int
    target: float
    idle_minutes: int
    shrink_below: float  # backlog per in-service instance under which the shrink alarm counts a datapoint
    starter_period_s: int = 60
    metric_period_s: int = 60
    metric_delay_s: int = 120  # how late SQS datapoints reach CloudWatch
    launch_hook_timeout_s: int = 1200

    @classmethod
    def from_template(cls, template: Mapping[str, Any]) -> ScalingParams:
        resources = template["Resources"].values()

        def of_type(kind: str) -> list[dict[str, Any]]:
            return [r["Properties"] for r in resources if r["Type"] == kind]

        (group,) = of_type("AWS::AutoScaling::AutoScalingGroup")
        (tracking,) = [
            p for p in of_type("AWS::AutoScaling::ScalingPolicy") if p["PolicyType"] == "TargetTrackingScaling"
        ]
        alarms = {a.get("AlarmDescription", ""): a for a in of_type("AWS::CloudWatch::Alarm")}
        (idle,) = [a for d, a in alarms.items() if "has had no work" in str(d)]
        (shrink,) = [a for d, a in alarms.items() if "under half its target" in str(d)]
        launch = [h for h in of_type("AWS::AutoScaling::LifecycleHook") if "LAUNCHING" in h["LifecycleTransition"]]
        (rate,) = [
            r["ScheduleExpression"]
            for r in of_type("AWS::Events::Rule")
            if "size the GPU fleets" in str(r.get("Description", "")) and "ScheduleExpression" in r
        ]
        return cls(
            min_size=int(group["MinSize"]),
            max_size=int(group["MaxSize"]),
            target=float(tracking["TargetTrackingConfiguration"]["TargetValue"]),
            idle_minutes=int(idle["EvaluationPeriods"]),
            shrink_below=float(shrink["Threshold"]),
            starter_period_s=_rate_seconds(rate),
            launch_hook_timeout_s=int(launch[0]["HeartbeatTimeout"]),
        )


def _rate_seconds(expression: str) -> int:
    amount, unit = expression.removeprefix("rate(").removesuffix(")").split()
    return int(amount) * {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}[unit]


@dataclass(frozen=True)
class Timings:
    boot_s: int = 120  # EC2 launch, DLAMI boot and the offline install (no package index)
    model_load_s: int = 60  # weights from S3 through the gateway endpoint, load and warm-up
    execution_s: float = 10.0  # one execution on one instance (docs/ops.md: executionSeconds)
    price_per_hour: float = 1.006  # g5.xlarge on demand, us-east-1

    @property
    def ready_s(self) -> int:
        return self.boot_s + self.model_load_s


@dataclass
class Instance:
    launched_at: int
    ready_at: int
    busy_until: int = -1
    busy_s: float = 0.0
    terminated_at: int | None = None

    def in_service(self, now: int) -> bool:
        return now >= self.ready_at

    def busy(self, now: int) -> bool:
        return now < self.busy_until


@dataclass
class Report:
    executions: int
    drain_s: float
    first_result_s: float
    wait_p50_s: float
    wait_p95_s: float
    gpu_hours: float
    idle_gpu_fraction: float
    gpu_hours_fleet_idle_past_window: float  # billed while nothing had run for longer than the idle window
    cost_usd: float
    peak_instances: int
    waits: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("waits")
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in data.items()}


def simulate(params: ScalingParams, timings: Timings, arrivals: list[int], horizon_s: int | None = None) -> Report:
    """Run the fleet over `arrivals` (submission seconds, sorted) until every execution finished and the fleet
    is back at its minimum (or `horizon_s`)."""
    arrivals = sorted(arrivals)
    pending = deque(arrivals)
    waiting: deque[int] = deque()
    instances: list[Instance] = [Instance(-timings.ready_s, 0) for _ in range(params.min_size)]
    desired = params.min_size
    waits: list[float] = []
    completions: list[int] = []
    backlog_history: list[int] = []  # per second
    per_instance_history: list[float] = []
    idle_since: int | None = 0
    idle_past_window_s = 0.0
    peak = len(instances)
    window_s = params.idle_minutes * params.metric_period_s
    now = 0
    end = horizon_s or (arrivals[-1] if arrivals else 0) + 48 * 3600
    while now <= end:
        while pending and pending[0] <= now:
            waiting.append(pending.popleft())
        live = [i for i in instances if i.terminated_at is None]
        for instance in live:  # finish, then take the next waiting execution
            if instance.in_service(now) and not instance.busy(now) and waiting:
                arrived = waiting.popleft()
                waits.append(now - arrived)
                instance.busy_until = now + math.ceil(timings.execution_s)
                instance.busy_s += timings.execution_s
                completions.append(instance.busy_until)
        held = sum(1 for i in live if i.busy(now))
        backlog = len(waiting) + held
        in_service = sum(1 for i in live if i.in_service(now))
        backlog_history.append(backlog)
        per_instance_history.append(backlog / max(in_service, 1))
        if backlog:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        if idle_since is not None and now - idle_since > window_s + params.metric_period_s:
            idle_past_window_s += len(live)

        if now % params.starter_period_s == 0 and now > 0:  # the starter: live counts
            wanted = min(params.max_size, math.ceil(backlog / params.target))
            desired = max(desired, wanted)
        if now % params.metric_period_s == 0 and now > 0:
            desired = _alarms(params, desired, backlog_history, per_instance_history, now, in_service)

        live = [i for i in instances if i.terminated_at is None]
        while len(live) < desired:
            instance = Instance(launched_at=now, ready_at=now + timings.ready_s)
            instances.append(instance)
            live.append(instance)
        while len(live) > desired:
            candidates = [i for i in live if not i.in_service(now)] or [i for i in live if not i.busy(now)]
            if not candidates:
                break  # every instance is busy: protected from scale-in
            victim = max(candidates, key=lambda i: i.launched_at)
            victim.terminated_at = now
            live.remove(victim)
        peak = max(peak, len(live))
        drained = not pending and not waiting and held == 0 and bool(completions) and now >= max(completions)
        if drained and len(live) == params.min_size:
            break
        now += 1
    for instance in instances:
        if instance.terminated_at is None:
            instance.terminated_at = now
    billed_s = sum((i.terminated_at or now) - max(i.launched_at, 0) for i in instances)
    busy_s = sum(i.busy_s for i in instances)
    first_arrival = arrivals[0] if arrivals else 0
    return Report(
        executions=len(arrivals),
        drain_s=(max(completions) - first_arrival) if completions else 0.0,
        first_result_s=(min(completions) - first_arrival) if completions else 0.0,
        wait_p50_s=statistics.median(waits) if waits else 0.0,
        wait_p95_s=_nearest_rank(waits, 0.95),
        gpu_hours=billed_s / 3600,
        idle_gpu_fraction=(billed_s - busy_s) / billed_s if billed_s else 0.0,
        gpu_hours_fleet_idle_past_window=idle_past_window_s / 3600,
        cost_usd=billed_s / 3600 * timings.price_per_hour,
        peak_instances=peak,
        waits=waits,
    )


def _alarms(
    params: ScalingParams,
    desired: int,
    backlog: list[int],
    per_instance: list[float],
    now: int,
    in_service: int,
) -> int:
    """Target tracking (late datapoints, scale-out only) and the two scale-in alarms, once a minute."""
    period = params.metric_period_s

    def datapoints(series: list[Any], count: int, delay: int) -> list[Any] | None:
        points = []
        for k in range(count):
            stop = now - delay - k * period
            start = stop - period
            if start < 0:
                return None
            points.append(max(series[start:stop]))
        return points

    late = datapoints(per_instance, 3, params.metric_delay_s)
    if late is not None and min(late) > params.target:
        late_backlog = datapoints(backlog, 1, params.metric_delay_s) or [0]
        desired = max(desired, min(params.max_size, math.ceil(late_backlog[0] / params.target)))
    idle = datapoints(backlog, params.idle_minutes, 0)
    if idle is not None and max(idle) < 0.5:
        return params.min_size
    under = datapoints(per_instance, params.idle_minutes, 0)
    if under is not None and max(under) < params.shrink_below and desired > params.min_size and in_service:
        return desired - 1
    return desired


def _nearest_rank(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])


# --- workloads ---


def burst(count: int, at_s: int = 1) -> list[int]:
    return [at_s] * count


def bursty_day(seed: int = 13) -> list[int]:
    """A working day: bursts of 5-120 executions over 1-5 minutes at random hours 08-20, and a few singles."""
    rng = random.Random(seed)
    arrivals = []
    for _ in range(14):
        start = rng.randint(8 * 3600, 20 * 3600)
        size = rng.randint(5, 120)
        spread = rng.randint(60, 300)
        arrivals += [start + rng.randint(0, spread) for _ in range(size)]
    arrivals += [rng.randint(0, 24 * 3600) for _ in range(20)]
    return sorted(arrivals)


def run(template: dict[str, Any], timings: Timings | None = None) -> dict[str, Any]:
    params = ScalingParams.from_template(template)
    timings = timings or Timings()
    burst_report = simulate(params, timings, burst(1000))
    day_report = simulate(params, timings, bursty_day())
    targets = {
        "first_result_from_zero_s": timings.ready_s + 120,
        "idle_gpu_fraction_burst": 0.10,
        "gpu_hours_fleet_idle_past_window": 0.0,
    }
    return {
        "params": asdict(params),
        "timings": asdict(timings),
        "burst_1000": burst_report.summary(),
        "bursty_day": day_report.summary(),
        "targets": targets,
        "meets": {
            "first_result_from_zero": burst_report.first_result_s <= targets["first_result_from_zero_s"],
            "idle_gpu_fraction_burst": burst_report.idle_gpu_fraction <= targets["idle_gpu_fraction_burst"],
            "no_gpu_hours_when_idle": day_report.gpu_hours_fleet_idle_past_window == 0.0,
        },
    }


def synthesized_template() -> dict[str, Any]:
    """The default stack's template (cdk.json's context, no layer or wheels build)."""
    from infra.app import build_app

    with tempfile.TemporaryDirectory(prefix="stagehub-sim-") as outdir:
        app, stack = build_app({"skipLayerBuild": True}, outdir=outdir)
        assembly = app.synth()
        return dict(assembly.get_stack_by_name(stack.stack_name).template)


def table(results: dict[str, Any]) -> str:
    burst_1000, day, targets = results["burst_1000"], results["bursty_day"], results["targets"]
    p, t = results["params"], results["timings"]
    lines = [
        f"Fleet simulator (bench/fleet_sim.py): min {p['min_size']}, max {p['max_size']}, target {p['target']:g} "
        f"per instance, scale-in after {p['idle_minutes']} idle min, starter every {p['starter_period_s']} s; "
        f"boot {t['boot_s']} s + model load {t['model_load_s']} s, {t['execution_s']:g} s per execution, "
        f"{t['price_per_hour']} USD/h.",
        "",
        "| figure | burst of 1,000 | bursty day | target |",
        "|---|---|---|---|",
        f"| executions | {burst_1000['executions']} | {day['executions']} | — |",
        f"| first result from zero | {burst_1000['first_result_s']:.0f} s | {day['first_result_s']:.0f} s | "
        f"≤ {targets['first_result_from_zero_s']} s (boot + 2 min) |",
        f"| drain time | {burst_1000['drain_s'] / 60:.1f} min | {day['drain_s'] / 3600:.1f} h | as simulated |",
        f"| queue wait p50 / p95 | {burst_1000['wait_p50_s']:.0f} / {burst_1000['wait_p95_s']:.0f} s | "
        f"{day['wait_p50_s']:.0f} / {day['wait_p95_s']:.0f} s | — |",
        f"| GPU-hours | {burst_1000['gpu_hours']:.2f} | {day['gpu_hours']:.2f} | — |",
        f"| idle GPU fraction | {burst_1000['idle_gpu_fraction']:.3f} | {day['idle_gpu_fraction']:.3f} | "
        f"≤ {targets['idle_gpu_fraction_burst']} (burst) |",
        f"| GPU-hours billed past the idle window | {burst_1000['gpu_hours_fleet_idle_past_window']:.2f} | "
        f"{day['gpu_hours_fleet_idle_past_window']:.2f} | 0 |",
        f"| GPU cost | {burst_1000['cost_usd']:.2f} USD | {day['cost_usd']:.2f} USD | — |",
        f"| peak instances | {burst_1000['peak_instances']} | {day['peak_instances']} | max {p['max_size']} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, help="a synthesized template (default: synthesize cdk.json's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for fleet.json and fleet.md")
    defaults = Timings()
    parser.add_argument("--boot-s", type=int, default=defaults.boot_s, help="launch to worker installed")
    parser.add_argument("--model-load-s", type=int, default=defaults.model_load_s, help="installed to ready")
    parser.add_argument("--execution-s", type=float, default=defaults.execution_s, help="per execution, one instance")
    parser.add_argument("--price-per-hour", type=float, default=defaults.price_per_hour, help="USD per instance-hour")
    args = parser.parse_args(argv)
    template = json.loads(args.template.read_text()) if args.template else synthesized_template()
    timings = Timings(args.boot_s, args.model_load_s, args.execution_s, args.price_per_hour)
    results = run(template, timings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "fleet.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
