"""The benchmark's figures and table from its runs (bench/__main__.py); no model and no timing involved."""

from __future__ import annotations

from typing import Any

from bench.__main__ import _figures, markdown
from bench.worker_bench import Run


def _run(executions: int, seconds: float) -> Run:
    return Run(executions, seconds, [seconds * (n + 1) / executions for n in range(executions)])


RUNS = {
    "bare_b1": _run(8, 8.0),  # 1.0 execution/s
    "worker_b1": _run(8, 8.2),
    "bare_b4": _run(8, 4.0),
    "worker_b4": _run(8, 5.0),
    "naive_b1": _run(8, 8.6),
}


def test_figures_are_ratios_of_rates() -> None:
    figures = _figures(RUNS)
    assert figures["efficiency_b1"] == round(8.0 / 8.2, 4)
    assert figures["efficiency_b4"] == 0.8
    assert figures["batching_gain_worker"] == round(8.2 / 5.0, 3)
    assert figures["batching_gain_bare"] == 2.0
    assert figures["overlap_saving_per_image"] == round(1 - 8.2 / 8.6, 4)


def test_the_table_states_the_machine_and_every_figure() -> None:
    results: dict[str, Any] = {
        "machine": {"cores": 2, "cpu": "Test CPU", "torch": "2.x", "device": "cpu", "torch_threads": 1, "when": "now"},
        "config": {"model": "tiny-sd", "size": 64, "steps": 20, "bare_execution_s": 1.0, "executions": 8, "rounds": 3},
        "figures": _figures(RUNS),
        "runs": {name: {"best": run.report(), "all": [run.report()]} for name, run in RUNS.items()},
        "api": {
            "cold_import_ms": {"functions.a.handler": 120.0, "functions.b.handler": 250.5},
            "queue_to_start": {"p50_ms": 12.0, "p95_ms": 20.0, "samples": 10},
            "warm_latency": {"GET /health": {"p50_ms": 40.0, "p95_ms": 45.0, "samples": 100}},
        },
    }
    table = markdown(results)
    assert "2-core Test CPU" in table
    assert "1 threads" in table
    assert "| worker efficiency, batch 1 (worker ÷ bare loop) | 0.976 | ≥ 0.97 |" in table
    assert "| worker efficiency, batch 4 | 0.800 | ≥ 0.97 |" in table
    assert "| handler cold import, slowest (functions.b.handler) | 250.5 ms | ≤ 300 ms |" in table
    assert "fastest of 3 interleaved runs" in table
    assert "| latency p50 / p95, batch 4 |" in table
