"""The real-size bench's figures and table (bench/real_size_bench.py) from synthetic runs: no model, no timing."""

from __future__ import annotations

from typing import Any

from bench.real_size_bench import figures, gpu_class, markdown, published_comparison
from bench.worker_bench import Run


def _report(seconds: float, executions: int = 8) -> dict[str, Any]:
    return Run(executions, seconds, [seconds] * executions, model_s=seconds).report()


# Two rounds, the second a slow spell hitting every kind of its round alike.
RUNS = {
    "plain_bare_b1": [_report(16.0), _report(32.0)],
    "plain_worker_b1": [_report(16.5), _report(33.0)],
    "plain_bare_b4": [_report(8.0), _report(16.0)],
    "plain_worker_b4": [_report(8.2), _report(16.4)],
    "fast_bare_b1": [_report(10.0), _report(20.0)],
    "fast_worker_b1": [_report(10.2), _report(20.4)],
    "fast_bare_b4": [_report(5.0), _report(10.0)],
    "fast_worker_b4": [_report(5.2), _report(10.4)],
}
H100 = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13", "device": "cuda", "torch_threads": 16, "when": "now"}
A100 = H100 | {"gpu": "NVIDIA A100-SXM4-80GB"}


def test_per_image_times_efficiency_and_speedup_are_medians_of_within_round_ratios() -> None:
    found = figures(RUNS, ["plain", "fast"])
    assert found["plain_b1"]["bare_s_per_image"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert found["plain_b1"]["efficiency"] == {"median": round(16 / 16.5, 4), "min": 0.9697, "max": 0.9697}
    assert found["fast_b4"]["worker_s_per_image"]["median"] == round((5.2 + 10.4) / 2 / 8, 3)
    assert found["fast_speedup_b1"] == {"median": round(16.5 / 10.2, 3), "min": 1.618, "max": 1.618}
    assert "fast_speedup_b1" not in figures({k: v for k, v in RUNS.items() if k.startswith("plain")}, ["plain"])


def test_the_fast_path_is_compared_with_the_published_figure_of_its_gpu_class_only() -> None:
    assert gpu_class(A100) == "A100"
    assert gpu_class({"device": "cpu"}) is None
    assert published_comparison("sdxl", 30, A100, 2.794) == {
        "published_s": 2.54,
        "what": "bf16 + SDPA + torch.compile (max-autotune, CUDA graphs)",
        "ratio": 1.1,
    }
    assert published_comparison("sdxl", 30, H100, 2.0) is None  # no published figure for an H100 with compile
    assert published_comparison("sdxl", 20, A100, 2.0) is None  # another step count is another figure


def test_the_table_has_a_row_per_model_profile_and_batch_and_says_what_it_compared() -> None:
    results = {
        "machine": A100,
        "config": {"profiles": ["plain", "fast"], "rounds": 2, "executions": 8, "steps": 30},
        "models": {
            "sdxl": {
                "family": "sdxl",
                "size": 1024,
                "steps": 30,
                "applied": {"plain": ["channels-last"], "fast": ["channels-last", "fused-qkv"]},
                "warm_up_s": {"plain": 20.0, "fast": 400.0},
                "figures": figures(RUNS, ["plain", "fast"]),
            }
        },
    }
    table = markdown(results)
    assert table.count("| sdxl 1024², 30 steps |") == 4
    assert "| sdxl 1024², 30 steps | fast | 4 | 0.938 | 0.975 |" in table
    assert "fast ÷ plain in the worker 1.618x" in table
    assert "vs published 2.54 s" in table
    assert "NVIDIA A100-SXM4-80GB" in table
