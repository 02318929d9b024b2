"""The benchmark's figures and table from its runs (bench/__main__.py); no model and no timing involved."""

from __future__ import annotations

from typing import Any

from bench.__main__ import figures, markdown
from bench.worker_bench import Run


def _report(seconds: float, model_s: float | None = None) -> dict[str, Any]:
    latencies = [seconds * (n + 1) / 8 for n in range(8)]
    return Run(8, seconds, latencies, model_s=seconds if model_s is None else model_s).report()


# Three rounds; the second is a slow spell of the machine that hits every kind of that round alike.
RUNS = {
    "bare_b1": [_report(8.0), _report(16.0), _report(8.0)],
    "worker_b1": [_report(8.2, 8.0), _report(16.4, 16.0), _report(8.1, 8.0)],
    "bare_b4": [_report(4.0), _report(8.0), _report(4.0)],
    "worker_b4": [_report(5.0), _report(10.0), _report(4.0)],
    "naive_b1": [_report(8.6), _report(17.2), _report(8.6)],
}


def test_figures_are_medians_of_ratios_taken_within_a_round() -> None:
    found = figures(RUNS)
    assert found["efficiency_b1"] == {"median": round(8.0 / 8.2, 4), "min": round(8.0 / 8.2, 4), "max": 0.9877}
    assert found["efficiency_b4"] == {"median": 0.8, "min": 0.8, "max": 1.0}
    assert found["batching_gain_bare"]["median"] == 2.0
    assert found["overlap_saving_per_image"]["median"] == round(1 - 8.2 / 8.6, 4)
    assert found["model_busy_b1"]["median"] == round(8.0 / 8.2, 4)  # waited for work the rest of the time
    assert found["model_speed_b1"] == {"median": 1.0, "min": 1.0, "max": 1.0}  # computed as fast as the bare loop


def test_the_table_states_the_machine_and_every_figure() -> None:
    results: dict[str, Any] = {
        "machine": {"cores": 2, "cpu": "Test CPU", "torch": "2.x", "device": "cpu", "torch_threads": 1, "when": "now"},
        "config": {"model": "tiny-sd", "size": 64, "steps": 20, "bare_execution_s": 1.0, "executions": 8, "rounds": 3},
        "figures": figures(RUNS),
        "runs": RUNS,
        "api": {
            "cold_import_ms": {"functions.a.handler": 120.0, "functions.b.handler": 250.5},
            "queue_to_start": {"p50_ms": 12.0, "p95_ms": 20.0, "samples": 10},
            "warm_latency": {"GET /health": {"p50_ms": 40.0, "p95_ms": 45.0, "samples": 100}},
        },
    }
    table = markdown(results)
    assert "2-core Test CPU" in table
    assert "1 threads" in table
    assert "3 interleaved rounds" in table
    assert "| worker efficiency, batch 1 (worker ÷ bare loop) | 0.976 (0.976 to 0.988) | ≥ 0.97 |" in table
    assert "| worker efficiency, batch 4 | 0.800 (0.800 to 1.000) | ≥ 0.97 |" in table
    assert "| batching gain, bare loop | 2.00x (2.00x to 2.00x) | as measured |" in table
    assert "| handler cold import, slowest (functions.b.handler) | 250.5 ms | ≤ 300 ms |" in table
    assert "| latency p50 / p95, batch 4 |" in table
