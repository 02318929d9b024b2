"""`python -m bench --real-size`: the worker against the bare loop on real-size models, plain and fast profile.

For each real-size random-weight model (bench.real_size: SD 1.5-shaped at 512x512, SDXL-shaped at 1024x1024)
one bench stack, and in it one model registry per performance profile (gpu_worker/performance.py), each
loaded and warmed up as a worker does it (the fast one compiles 1 to 4 images at the model's size), and
primed (one untimed call per batch size). Then `rounds` rounds; each runs, for each profile and batch size
(1 and 4), the bare loop and the real worker on `executions` executions of `steps` steps, back to back, so
that every ratio is taken within one round.

Figures per model, profile and batch: seconds per image in the bare loop and in the worker, the worker's
efficiency (worker ÷ bare, target ≥ 0.97), the fast profile's speed-up over plain, and, where one was
published for the same model and GPU class, the fast path's time over the published one (target ≤ 1.10).
Writes bench/results/<device>-real-size.json and .md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import machine, worker_bench
from bench.real_size import REAL_SIZE_MODELS, RealSizeModel
from bench.stack import api_user, bench_stack
from bench.workload import ApiUser, subjects, txt2img_stage
from gpu_worker.models import ModelRegistry
from gpu_worker.performance import performance_profile, resolve_device
from shared.settings import StackSettings

BATCHES = (1, 4)
EFFICIENCY_TARGET = 0.97
PUBLISHED_MARGIN = 1.10  # the fast path within 10% of the published figure


@dataclass(frozen=True)
class Published:
    """A published figure for one model family on one GPU class: seconds per image at `steps` steps, batch 1."""

    seconds: float
    steps: int
    what: str
    source: str


# From issue 17: diffusers' fast-diffusion tutorial (SDXL 1024², 30 steps, batch 1, A100-80GB) and the
# stable-fast project's SD 1.5 figure (512², A100): 60 it/s, taken as 1/60 s per step.
PUBLISHED: dict[tuple[str, str], Published] = {
    ("sdxl", "A100"): Published(2.54, 30, "bf16 + SDPA + torch.compile (max-autotune, CUDA graphs)", "diffusers"),
    ("sd15", "A100"): Published(30 / 60, 30, "stable-fast (60 it/s)", "stable-fast"),
}


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def gpu_class(info: dict[str, Any]) -> str | None:
    """A100, H100, ... from the machine's GPU name (None on a CPU)."""
    name = str(info.get("gpu", ""))
    for candidate in ("A100", "H100", "H200", "L40S", "A10G", "L4"):
        if candidate in name:
            return candidate
    return None


def run(
    models_dir: Path,
    models: list[str],
    profiles: list[str],
    *,
    rounds: int,
    executions: int,
    steps: int,
    size: int | None = None,
) -> dict[str, Any]:
    device = resolve_device("auto")
    results: dict[str, Any] = {"machine": machine.describe(device), "models": {}}
    results["config"] = {"profiles": profiles, "rounds": rounds, "executions": executions, "steps": steps}
    _log(f"machine: {machine.summary(results['machine'])}")
    for key in models:
        real = REAL_SIZE_MODELS[key]
        _log(f"{key}: {models_dir / real.name} (built if missing)")
        real.ensure(models_dir)
        results["models"][key] = _model_matrix(models_dir, real, profiles, rounds, executions, steps, size or real.size)
    return results


def _model_matrix(
    models_dir: Path,
    real: RealSizeModel,
    profiles: list[str],
    rounds: int,
    executions: int,
    steps: int,
    size: int,
) -> dict[str, Any]:
    warm_up = {"WARM_UP_SIZES": json.dumps([f"{size}x{size}"]), "MAX_BATCH_SIZE": str(max(BATCHES))}
    with bench_stack(models_dir, real.env(models_dir), **warm_up) as settings:
        registries, warm_up_s = _registries(settings, profiles)
        with api_user(timeout_s=60) as user:
            pipeline_id = user.create_pipeline([txt2img_stage(size, steps)])
            runs = _rounds(settings, registries, user, pipeline_id, real.name, size, steps, rounds, executions)
    applied = {profile: registry.applied.get(real.name, []) for profile, registry in registries.items()}
    return {
        "family": real.family,
        "size": size,
        "steps": steps,
        "applied": applied,
        "warm_up_s": warm_up_s,
        "runs": runs,
        "figures": figures(runs, profiles),
    }


def _registries(settings: StackSettings, profiles: list[str]) -> tuple[dict[str, ModelRegistry], dict[str, float]]:
    """One registry per profile, loaded and warmed up (the fast profile compiles its planned shapes here)."""
    registries: dict[str, ModelRegistry] = {}
    seconds: dict[str, float] = {}
    for name in profiles:
        registry = ModelRegistry(settings, profile=performance_profile(name, resolve_device(settings.device)))
        started = time.monotonic()
        registry.warm_up()
        seconds[name] = round(time.monotonic() - started, 1)
        _log(f"{name} profile: loaded and warmed up in {seconds[name]} s")
        registries[name] = registry
    return registries, seconds


def _rounds(
    settings: StackSettings,
    registries: dict[str, ModelRegistry],
    user: ApiUser,
    pipeline_id: str,
    model: str,
    size: int,
    steps: int,
    rounds: int,
    executions: int,
) -> dict[str, list[dict[str, Any]]]:
    prompts = [worker_bench.PROMPT.format(s) for s in subjects(executions)]
    for profile, registry in registries.items():  # untimed: first calls at this size set up kernels and memory
        for batch in BATCHES:
            _log(f"priming: {model} {profile} batch {batch}")
            worker_bench.bare_loop(registry, model, prompts[:batch], size, steps, batch)
    runs: dict[str, list[dict[str, Any]]] = {}
    for number in range(1, rounds + 1):
        for profile, registry in registries.items():
            for batch in BATCHES:
                _log(f"round {number}/{rounds}: {model} {profile} batch {batch}")
                bare = worker_bench.bare_loop(registry, model, prompts, size, steps, batch)
                ids = [user.submit(pipeline_id, {"subject": s}) for s in subjects(executions)]
                worker = worker_bench.worker_run(settings, registry, ids, batch=batch, overlap=True)
                runs.setdefault(f"{profile}_bare_b{batch}", []).append(bare.report())
                runs.setdefault(f"{profile}_worker_b{batch}", []).append(worker.report())
    return runs


def figures(runs: dict[str, list[dict[str, Any]]], profiles: list[str]) -> dict[str, Any]:
    """Per profile and batch: seconds per image (bare, worker), efficiency; fast ÷ plain speed-ups. Ratios are
    taken within a round, then the median over the rounds."""

    def per_image(kind: str) -> list[float]:
        return [run["seconds"] / run["executions"] for run in runs[kind]]

    found: dict[str, Any] = {}
    for profile in profiles:
        for batch in BATCHES:
            bare, worker = per_image(f"{profile}_bare_b{batch}"), per_image(f"{profile}_worker_b{batch}")
            found[f"{profile}_b{batch}"] = {
                "bare_s_per_image": worker_bench.median_and_range(bare, 3),
                "worker_s_per_image": worker_bench.median_and_range(worker, 3),
                "efficiency": worker_bench.median_and_range([b / w for b, w in zip(bare, worker, strict=True)]),
            }
    if {"plain", "fast"} <= set(profiles):
        for batch in BATCHES:
            plain, fast = per_image(f"plain_worker_b{batch}"), per_image(f"fast_worker_b{batch}")
            found[f"fast_speedup_b{batch}"] = worker_bench.median_and_range(
                [p / f for p, f in zip(plain, fast, strict=True)], 3
            )
    return found


def published_comparison(family: str, steps: int, info: dict[str, Any], fast_b1_s: float) -> dict[str, Any] | None:
    """The fast path's bare seconds per image over the published figure for this family and GPU class."""
    reference = PUBLISHED.get((family, gpu_class(info) or ""))
    if reference is None or reference.steps != steps:
        return None
    return {"published_s": reference.seconds, "what": reference.what, "ratio": round(fast_b1_s / reference.seconds, 3)}


def markdown(results: dict[str, Any]) -> str:
    info, config = results["machine"], results["config"]
    lines = [
        f"Measured on {machine.summary(info)}; {config['executions']} executions per run, {config['rounds']} rounds "
        "(each figure the median over the rounds, in brackets the lowest and highest).",
        "",
        "| model | profile | batch | bare s/image | worker s/image | efficiency (target ≥ 0.97) |",
        "|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for key, found in results["models"].items():
        label = f"{key} {found['size']}², {found['steps']} steps"
        for profile in config["profiles"]:
            for batch in BATCHES:
                cell = found["figures"][f"{profile}_b{batch}"]
                lines.append(
                    f"| {label} | {profile} | {batch} | {cell['bare_s_per_image']['median']} | "
                    f"{cell['worker_s_per_image']['median']} | {_range(cell['efficiency'])} |"
                )
        for batch in BATCHES:
            if (speedup := found["figures"].get(f"fast_speedup_b{batch}")) is not None:
                notes.append(f"- {label}, batch {batch}: fast ÷ plain in the worker {_range(speedup, 'x')}")
        notes.append(f"- {label}: warm-up {found['warm_up_s']} s; applied {found['applied']}")
        if "fast" in config["profiles"]:
            fast_b1 = found["figures"]["fast_b1"]["bare_s_per_image"]["median"]
            comparison = published_comparison(found["family"], found["steps"], info, fast_b1)
            notes.append(
                f"- {label}: fast path {fast_b1} s/image at batch 1 vs published {comparison['published_s']} s "
                f"({comparison['what']}): {comparison['ratio']} (target ≤ {PUBLISHED_MARGIN})"
                if comparison
                else f"- {label}: no published figure for this model on {gpu_class(info) or 'a CPU'} at these steps"
            )
    return "\n".join([*lines, "", *notes]) + "\n"


def _range(figure: dict[str, float], unit: str = "") -> str:
    return f"{figure['median']}{unit} ({figure['min']}{unit} to {figure['max']}{unit})"


def write(results: dict[str, Any], directory: Path) -> str:
    directory.mkdir(exist_ok=True)
    stem = f"{results['machine']['device']}-real-size"
    (directory / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (directory / f"{stem}.md").write_text(table)
    return table
