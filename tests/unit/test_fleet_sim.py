"""The fleet simulator against a case computed by hand, and its parameters read from the synthesized template."""

from __future__ import annotations

import pytest

from bench.fleet_sim import ScalingParams, Timings, burst, bursty_day, simulate

PARAMS = ScalingParams(min_size=0, max_size=1, target=4, idle_minutes=3, shrink_below=2, metric_delay_s=0)
TIMINGS = Timings(boot_s=60, model_load_s=30, execution_s=10, price_per_hour=3.6)


def test_four_executions_on_an_idle_fleet_by_hand() -> None:
    """4 submitted at t=1. The starter's tick at t=60 sees backlog 4 and launches one instance, in service at
    60 + 90 = 150; it runs them at 150, 160, 170, 180 (waits 149, 159, 169, 179) and is done at 190. The shrink
    alarm's three datapoints [180,240) max 1, [240,300) 0, [300,360) 0 are all under 2 at t=360: desired 0, and
    the idle instance terminates at 360 (the idle alarm would need [180,240) empty too). Billed 360 - 60 = 300 s,
    busy 40 s: idle fraction 260/300; at 3.6 USD/h the cost is 0.30 USD."""
    report = simulate(PARAMS, TIMINGS, burst(4, at_s=1))
    assert report.first_result_s == 159
    assert report.drain_s == 189
    assert sorted(report.waits) == [149, 159, 169, 179]
    assert report.wait_p50_s == 164
    assert report.wait_p95_s == 179
    assert report.gpu_hours == pytest.approx(300 / 3600)
    assert report.idle_gpu_fraction == pytest.approx(260 / 300)
    assert report.cost_usd == pytest.approx(0.30)
    assert report.peak_instances == 1
    assert report.gpu_hours_fleet_idle_past_window == 0


def test_the_idle_alarm_takes_the_fleet_to_its_minimum() -> None:
    """Without the shrink alarm (threshold 0), the idle alarm acts at t=420: [240,420) had no work at all."""
    params = ScalingParams(min_size=0, max_size=1, target=4, idle_minutes=3, shrink_below=0, metric_delay_s=0)
    report = simulate(params, TIMINGS, burst(4, at_s=1))
    assert report.gpu_hours == pytest.approx(360 / 3600)


def test_busy_instances_are_never_terminated_and_the_max_bounds_the_fleet() -> None:
    params = ScalingParams(min_size=0, max_size=3, target=2, idle_minutes=2, shrink_below=1, metric_delay_s=0)
    report = simulate(params, TIMINGS, burst(60, at_s=1))
    assert report.peak_instances == 3
    assert len(report.waits) == 60  # every execution ran to the end: none lost to a scale-in
    assert report.gpu_hours_fleet_idle_past_window == 0


def test_a_day_of_bursts_is_deterministic() -> None:
    assert bursty_day() == bursty_day()
    assert len(bursty_day()) > 100
