"""`make bench`: python -m bench --models-dir .cache/models [--executions N] [--rounds R] [--quick] [--real-size].

By default the worker runs the tiny random-weight Stable Diffusion (gpu_worker.tiny_models) at 64x64 and writes
bench/results/<device>.json (figures and the machine they ran on) and bench/results/<device>.md (the table the
README shows). With --real-size (for a GPU machine): the real-size random-weight SD 1.5 (512x512) and SDXL
(1024x1024), built into DIR if missing, each with the plain and the fast performance profile at batch 1 and 4
(bench/real_size_bench.py; bench/results/<device>-real-size.json and .md).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import api_bench, fleet_sim, machine, real_size_bench, robustness_bench, worker_bench
from bench.stack import api_user, bench_stack
from bench.workload import ApiUser, subjects, txt2img_stage
from gpu_worker.aws_io import AwsIoProcess
from gpu_worker.models import ModelRegistry

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"efficiency": 0.97, "queue_to_start_ms": 100, "cold_import_ms": 300}


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(
    models_dir: Path,
    executions: int,
    rounds: int,
    size: int,
    target_s: float,
) -> dict[str, Any]:
    """The benchmarks on the tiny models' default txt2img model.

    Each round runs every kind (bare loop or worker, batch 1 or 4, overlapped or naive) once, back to back;
    `figures` pairs the kinds within each round. Every run is kept in the JSON."""
    results: dict[str, Any] = {"targets": TARGETS}
    with bench_stack(models_dir) as settings:
        model = settings.default_models["txt2img"]  # what the worker runs the txt2img stage on
        registry = ModelRegistry(settings)
        results["machine"] = machine.describe(registry.device)
        _log(f"machine: {machine.summary(results['machine'])}")
        registry.warm_up()
        steps, one_s = worker_bench.calibrate_steps(registry, model, size, target_s)
        results["config"] = {"model": model, "size": size, "steps": steps, "executions": executions, "rounds": rounds}
        results["config"]["bare_execution_s"] = round(one_s, 3)
        _log(f"{size}x{size}, {steps} steps: one bare execution takes {one_s:.2f} s")

        with api_user() as user:
            pipeline_id = user.create_pipeline([txt2img_stage(size, steps)])
            prompts = [worker_bench.PROMPT.format(s) for s in subjects(executions)]

            def worker_pass(batch: int, overlap: bool) -> worker_bench.Run:
                ids = [user.submit(pipeline_id, {"subject": s}) for s in subjects(executions)]
                return worker_bench.worker_run(settings, registry, ids, batch=batch, overlap=overlap)

            passes: dict[str, Callable[[], worker_bench.Run]] = {}
            for batch in (1, 4):
                passes[f"bare_b{batch}"] = functools.partial(
                    worker_bench.bare_loop, registry, model, prompts, size, steps, batch
                )
                passes[f"worker_b{batch}"] = functools.partial(worker_pass, batch, overlap=True)
            passes["naive_b1"] = functools.partial(worker_pass, 1, overlap=False)
            runs: dict[str, list[worker_bench.Run]] = {name: [] for name in passes}
            for round_number in range(1, rounds + 1):  # interleaved, so a slow spell hits every kind alike
                for name, one_pass in passes.items():
                    _log(f"round {round_number}/{rounds}: {name}")
                    runs[name].append(one_pass())
            results["runs"] = {name: [r.report() for r in of_kind] for name, of_kind in runs.items()}
            results["figures"] = figures(results["runs"])

            _log("API: warm latency, queue-to-start")
            results["api"] = {"warm_latency": api_bench.warm_latency(user, pipeline_id)}
            aws_io = AwsIoProcess(settings)
            try:
                idle = worker_bench.make_worker(settings, registry, batch=1, overlap=True, aws_io=aws_io)
                results["api"]["queue_to_start"] = api_bench.queue_to_start(idle, user, pipeline_id)
            finally:
                aws_io.close()
            try:
                results["robustness"] = robustness(settings, user, size, steps)
            except RuntimeError as exc:  # the worker figures above stand without it
                _log(f"robustness not measured: {exc}")
                results["robustness_error"] = str(exc)
    _log("API: cold imports")
    results["api"]["cold_import_ms"] = api_bench.cold_imports()
    return results


def robustness(
    settings: Any, user: ApiUser, size: int, steps: int, *, kills: int = 3, executions: int = 16, shorts: int = 8
) -> dict[str, Any]:
    """Recovery after SIGKILLs and head-of-line blocking, with real worker processes (bench.robustness_bench)."""
    executions = max(executions, 4 * (kills + 1))
    _log(f"recovery: {kills} kills of the worker process, {executions} executions")
    found = {"recovery": robustness_bench.recovery(settings, user, size, steps, executions=executions, kills=kills)}
    _log(f"head-of-line: {shorts} short executions behind a long one, two workers")
    found["head_of_line"] = robustness_bench.head_of_line(settings, user, size, steps, shorts=shorts, long_factor=10)
    return found


def robustness_only(models_dir: Path, size: int, target_s: float, kills: int, executions: int, shorts: int) -> int:
    """Measure only the robustness figures and write them into the existing results of this device."""
    with bench_stack(models_dir) as settings:
        registry = ModelRegistry(settings)
        device = machine.describe(registry.device)["device"]
        path = RESULTS / f"{device}.json"
        results = json.loads(path.read_text()) if path.exists() else {"machine": machine.describe(registry.device)}
        registry.warm_up()
        steps, _ = worker_bench.calibrate_steps(registry, settings.default_models["txt2img"], size, target_s)
        with api_user() as user:
            results["robustness"] = robustness(
                settings, user, size, steps, kills=kills, executions=executions, shorts=shorts
            )
    if "figures" not in results:
        print(json.dumps(results["robustness"], indent=2))
        return 0
    return _write(results)


def figures(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The figures from the runs' reports, each a median over the rounds (with its range) of a ratio taken
    within one round: the kinds of one round ran back to back, so a slow spell of the machine mostly falls on
    both sides of a ratio."""
    rounds = range(len(runs["bare_b1"]))

    def ratio(numerator: str, denominator: str, field: str = "executions_per_s") -> dict[str, Any]:
        return worker_bench.median_and_range([runs[numerator][i][field] / runs[denominator][i][field] for i in rounds])

    return {
        "efficiency_b1": ratio("worker_b1", "bare_b1"),
        "efficiency_b4": ratio("worker_b4", "bare_b4"),
        "batching_gain_worker": ratio("worker_b4", "worker_b1"),
        "batching_gain_bare": ratio("bare_b4", "bare_b1"),
        "naive_efficiency_b1": ratio("naive_b1", "bare_b1"),
        # per image, the overlapped worker takes naive_rate / worker_rate of the naive worker's time
        "overlap_saving_per_image": worker_bench.median_and_range(
            [1 - runs["naive_b1"][i]["executions_per_s"] / runs["worker_b1"][i]["executions_per_s"] for i in rounds]
        ),
        # efficiency = model busy x model speed: waiting for work vs computing slower beside the I/O
        "model_busy_b1": worker_bench.median_and_range([run["model_busy"] for run in runs["worker_b1"]]),
        "model_speed_b1": ratio("bare_b1", "worker_b1", "model_s"),
        "latency_p50_s_b1": worker_bench.median_and_range([run["latency_p50_s"] for run in runs["worker_b1"]], 3),
        "latency_p95_s_b1": worker_bench.median_and_range([run["latency_p95_s"] for run in runs["worker_b1"]], 3),
        "latency_p50_s_b4": worker_bench.median_and_range([run["latency_p50_s"] for run in runs["worker_b4"]], 3),
        "latency_p95_s_b4": worker_bench.median_and_range([run["latency_p95_s"] for run in runs["worker_b4"]], 3),
    }


def _cell(figure: dict[str, Any], form: str = "{:.3f}") -> str:
    """'median (min to max)'."""
    low, high = form.format(figure["min"]), form.format(figure["max"])
    return f"{form.format(figure['median'])} ({low} to {high})"


def markdown(results: dict[str, Any]) -> str:
    found, api, config = results["figures"], results["api"], results["config"]
    imports = api["cold_import_ms"]
    slowest = max(imports, key=imports.get)
    q2s = api["queue_to_start"]
    lines = [
        f"Measured on {machine.summary(results['machine'])}; {config['model']} at {config['size']}x{config['size']}, "
        f"{config['steps']} steps (one bare execution: {config['bare_execution_s']} s), "
        f"{config['executions']} executions per run, {config['rounds']} interleaved rounds; each figure is the "
        "median over the rounds of a ratio taken within a round (in brackets, the lowest and highest).",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| worker efficiency, batch 1 (worker ÷ bare loop) | {_cell(found['efficiency_b1'])} | ≥ 0.97 |",
        f"| worker efficiency, batch 4 | {_cell(found['efficiency_b4'])} | ≥ 0.97 |",
        f"| model busy, worker batch 1 (time in model calls ÷ run time) | {_cell(found['model_busy_b1'])} | — |",
        f"| model speed in the worker, batch 1 (bare ÷ worker time in model calls) | {_cell(found['model_speed_b1'])}"
        " | — |",
        f"| batching gain, worker (batch 4 ÷ batch 1) | {_cell(found['batching_gain_worker'], '{:.2f}x')} "
        "| as measured |",
        f"| batching gain, bare loop | {_cell(found['batching_gain_bare'], '{:.2f}x')} | as measured |",
        f"| latency p50 / p95, batch 1 | {found['latency_p50_s_b1']['median']} / "
        f"{found['latency_p95_s_b1']['median']} s | as measured |",
        f"| latency p50 / p95, batch 4 | {found['latency_p50_s_b4']['median']} / "
        f"{found['latency_p95_s_b4']['median']} s | as measured |",
        "| time saved per image, overlapped vs naive sequential worker | "
        f"{_cell(found['overlap_saving_per_image'], '{:.1%}')} | seed: ~5% |",
        f"| queue-to-start, idle worker (from the API's 202; p50 / p95) | {q2s['p50_ms']} / {q2s['p95_ms']} ms "
        "| ≤ 100 ms |",
        f"| handler cold import, slowest ({slowest}) | {imports[slowest]} ms | ≤ 300 ms |",
    ]
    for name, latency in api["warm_latency"].items():
        lines.append(f"| warm API latency `{name}` (p50 / p95) | {latency['p50_ms']} / {latency['p95_ms']} ms | — |")
    if "robustness" in results:
        recovery, blocking = results["robustness"]["recovery"], results["robustness"]["head_of_line"]
        lines += [
            f"| recovery, SIGKILL of a worker process → its execution running again (p50 / max over "
            f"{recovery['kills']} kills) | {recovery['recovery_p50_s']} / {recovery['recovery_max_s']} s | ≤ 30 s |",
            f"| drain of {recovery['executions']} executions with {recovery['kills']} kills (failed after too many "
            f"kills: {recovery.get('failed', 0)}) | {recovery['drain_s']} s | as measured |",
            f"| head-of-line: {blocking['shorts']} short executions behind a {blocking['long_factor']}x longer one, "
            f"two workers (p50 ÷ p50 alone) | {blocking['head_of_line_ratio']} ({blocking['shorts_p50_behind_long_s']}"
            f" / {blocking['shorts_p50_alone_s']} s) | ≈ 1 |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--executions", type=int, default=8, help="executions per run (a multiple of 4)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (one run of each kind each)")
    parser.add_argument("--size", type=int, help="image size (default: 64; with --real-size each model's native size)")
    parser.add_argument("--target-s", type=float, default=1.0, help="seconds one bare execution should take")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="CPU threads for the model (default: all cores but one, which moto and the worker's I/O need; on a "
        "GPU machine the model does not compete with them either)",
    )
    parser.add_argument("--quick", action="store_true", help="one round of 8 executions of ~0.3 s (a smoke run)")
    parser.add_argument(
        "--report-only",
        metavar="DEVICE",
        help="recompute the figures and the table of bench/results/DEVICE.json (cpu, cuda) from its runs",
    )
    parser.add_argument(
        "--robustness-only",
        action="store_true",
        help="measure only recovery and head-of-line (written into the device's existing results)",
    )
    parser.add_argument("--kills", type=int, default=3, help="with --robustness-only: worker processes killed")
    parser.add_argument(
        "--real-size",
        action="store_true",
        help="real-size random-weight models (built into DIR if missing), plain and fast profile, batch 1 and 4",
    )
    parser.add_argument("--real-size-models", default="sd15,sdxl", help="with --real-size: of sd15, sdxl")
    parser.add_argument("--profiles", default="plain,fast", help="with --real-size: performance profiles")
    parser.add_argument("--steps", type=int, default=30, help="with --real-size: denoising steps")
    parser.add_argument("--fleet-only", action="store_true", help="only the GPU fleet simulator (bench/fleet_sim.py)")
    args = parser.parse_args(argv)
    if args.fleet_only:
        return fleet_sim.main([])
    if args.report_only:
        results = json.loads((RESULTS / f"{args.report_only}.json").read_text())
        results["figures"] = figures(results["runs"])
        return _write(results)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("gpu_worker.models").setLevel(logging.INFO)  # loading and compiling: minutes on a GPU
    torch.set_num_threads(args.torch_threads)
    if args.quick:
        args.executions, args.rounds, args.target_s = 8, 1, 0.3
    if args.real_size:
        found = real_size_bench.run(
            args.models_dir,
            args.real_size_models.split(","),
            args.profiles.split(","),
            rounds=args.rounds,
            executions=args.executions,
            steps=args.steps,
            size=args.size,
        )
        print(real_size_bench.write(found, RESULTS))
        return 0
    size = args.size or 64
    if args.robustness_only:
        shorts = executions = args.executions
        return robustness_only(args.models_dir, size, args.target_s, args.kills, executions, shorts)
    code = _write(run(args.models_dir, args.executions, args.rounds, size, args.target_s))
    return code or fleet_sim.main([])  # its own part: the fleet's scaling, simulated from the template


def _write(results: dict[str, Any]) -> int:
    RESULTS.mkdir(exist_ok=True)
    device = results["machine"]["device"]
    (RESULTS / f"{device}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (RESULTS / f"{device}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
