"""Recovery and head-of-line figures, with real worker processes (`python -m gpu_worker`, `gpu_worker.process`)
on the bench's moto stack, their log lines (gpu_worker.endings' structured `execution.started`) read back.

- recovery: the supervisor runs one worker process; each time it has started an execution for the first time,
  its worker process is SIGKILLed; the figure is the time from the kill until the execution runs again (its
  `execution.started` line with a higher attempt), over several kills, and how long the whole set took to
  drain, with the results consumer and the dead-letter handler applying events meanwhile (bench.stack.apply_events):
  a message held through more kills than the in-queue's maxReceiveCount ends FAILED, as in AWS, and is counted;
- head-of-line: two worker processes, warm; short executions submitted right behind one long one, against the
  same shorts alone; the figure is the shorts' p50 latency behind the long one over their p50 alone (1.0: the
  long one delays nobody but itself, the idle worker takes the shorts).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stack import apply_events
from bench.workload import ApiUser, txt2img_stage
from local.consumers import QueueConsumers
from shared.aws import client
from shared.messages import ExecutionStatus
from shared.models import ExecutionRecord
from shared.settings import StackSettings
from shared.stages import manifest_key

ROOT = Path(__file__).resolve().parents[1]


def _events(log_path: Path) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        start = line.find('{"event"')
        if start >= 0:
            try:
                found.append(json.loads(line[start:]))
            except ValueError:
                continue
    return found


def _wait(condition: Callable[[], Any], timeout_s: float, what: str, log_path: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    if log_path is None:
        raise RuntimeError(f"timed out waiting for {what}")
    kept = Path(tempfile.gettempdir()) / f"bench-{log_path.name}"
    kept.write_text(log_path.read_text(errors="replace"))
    raise RuntimeError(f"timed out waiting for {what} (log: {kept})")


def _finished(settings: StackSettings, execution_id: str) -> bool:
    listed = client("s3", settings).list_objects_v2(Bucket=settings.results_bucket, Prefix=manifest_key(execution_id))
    return bool(listed.get("Contents"))


def _final_statuses(consumers: QueueConsumers, execution_ids: list[str]) -> list[str] | None:
    """Every execution's status once all are final (the events applied first, as AWS would); else None."""
    apply_events(consumers)
    found = {r.execution_id: r.status for r in ExecutionRecord.batch_get(execution_ids, consistent_read=True)}
    statuses = [found.get(execution_id, "") for execution_id in execution_ids]
    return statuses if all(status and ExecutionStatus(status).is_final for status in statuses) else None


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _environment(torch_threads: int) -> dict[str, str]:
    return dict(os.environ) | {"PROGRESS_INTERVAL_S": "1", "OMP_NUM_THREADS": str(torch_threads)}


def recovery(
    settings: StackSettings, user: ApiUser, size: int, steps: int, *, executions: int, kills: int
) -> dict[str, Any]:
    """Kill the supervisor's worker process `kills` times while it computes; time each kill -> running again.

    A worker holds up to a batch and a batch waiting (8), all started at once: `executions` should leave some
    to start after each restart (at least 4 x (kills + 1))."""
    pipeline_id = user.create_pipeline([txt2img_stage(size, min(150, steps * 5))])  # long enough to kill mid-stage
    ids = [user.submit(pipeline_id, {"subject": f"recovery {n}"}) for n in range(executions)]
    submitted = time.monotonic()
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        log_path = Path(scratch) / "supervisor.log"
        with log_path.open("wb") as log_file:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "gpu_worker"], env=_environment(1), cwd=ROOT, stderr=log_file
            )
            try:
                for _ in range(kills):
                    seen = len(_events(log_path))

                    def new_starts(seen: int = seen) -> list[dict[str, Any]]:
                        events = _events(log_path)[seen:]  # a first start: one kill per execution at most
                        return [e for e in events if e["event"] == "execution.started" and e["attempt"] == 1]

                    started = _wait(new_starts, 180, "an execution to start", log_path)[0]
                    [worker] = _children(supervisor.pid)
                    os.kill(worker, signal.SIGKILL)
                    killed_at = time.monotonic()

                    def again(started: dict[str, Any] = started) -> bool:
                        return any(
                            e["event"] == "execution.started"
                            and e["executionId"] == started["executionId"]
                            and e["attempt"] > started["attempt"]
                            for e in _events(log_path)
                        )

                    _wait(again, 180, "the killed execution to run again", log_path)
                    recoveries.append(time.monotonic() - killed_at)
                consumers = QueueConsumers(settings)
                statuses = _wait(lambda: _final_statuses(consumers, ids), 600, "every execution to end")
                drained_s = time.monotonic() - submitted
            finally:
                supervisor.send_signal(signal.SIGTERM)
                supervisor.wait(120)
    return {
        "kills": kills,
        "executions": executions,
        "recovery_s": [round(r, 2) for r in recoveries],
        "recovery_p50_s": round(statistics.median(recoveries), 2),
        "recovery_max_s": round(max(recoveries), 2),
        "drain_s": round(drained_s, 2),
        "failed": sum(status != "SUCCEEDED" for status in statuses),  # dead-lettered after too many kills
    }


def head_of_line(
    settings: StackSettings, user: ApiUser, size: int, short_steps: int, *, shorts: int, long_factor: int
) -> dict[str, Any]:
    """Two warm worker processes; the shorts' p50 latency behind one long execution over their p50 alone."""
    short = user.create_pipeline([txt2img_stage(size, short_steps)])
    long = user.create_pipeline([txt2img_stage(size, min(150, short_steps * long_factor))])
    with tempfile.TemporaryDirectory() as scratch:
        logs = [Path(scratch) / f"worker-{n}.log" for n in range(2)]
        workers = []
        for log_path in logs:
            with log_path.open("wb") as log_file:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gpu_worker.process"], env=_environment(1), cwd=ROOT, stderr=log_file
                    )
                )
        try:
            for log_path in logs:

                def ready(log_path: Path = log_path) -> bool:
                    return " ready" in log_path.read_text(errors="replace")

                _wait(ready, 300, "a ready worker", log_path)

            def shorts_latency(behind_long: bool) -> float:
                if behind_long:
                    long_id = user.submit(long, {"subject": "long"})
                    _wait(lambda: any(long_id in p.read_text(errors="replace") for p in logs), 60, "the long one")
                submitted = time.monotonic()
                ids = [user.submit(short, {"subject": f"short {n}"}) for n in range(shorts)]
                done: dict[str, float] = {}
                while len(done) < len(ids) and time.monotonic() - submitted < 600:
                    for execution_id in ids:
                        if execution_id not in done and _finished(settings, execution_id):
                            done[execution_id] = time.monotonic() - submitted
                    time.sleep(0.05)
                if behind_long:
                    _wait(lambda: _finished(settings, long_id), 600, "the long one to finish")
                return statistics.median(done.values())

            alone = shorts_latency(behind_long=False)
            behind = shorts_latency(behind_long=True)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(120)
    return {
        "shorts": shorts,
        "long_factor": long_factor,
        "shorts_p50_alone_s": round(alone, 3),
        "shorts_p50_behind_long_s": round(behind, 3),
        "head_of_line_ratio": round(behind / alone, 3),
    }
