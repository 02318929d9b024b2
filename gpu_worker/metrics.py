"""The worker's CloudWatch metrics (names and dimensions in shared.telemetry), published with PutMetricData.

Datapoints are buffered in memory and sent from a daemon thread at most every `flush_interval_s` (60 s), and
once more on `stop()`. Each flush sends one datum per metric and dimension set, its values as Values/Counts, so
CloudWatch still computes percentiles (the dashboard graphs StageDuration's p90). Every `sample_interval_s` the
thread also samples the GPU (nvidia-smi, only the GPU in CUDA_VISIBLE_DEVICES) and whether the worker is busy.

Metrics are off (a `NullMetrics`) unless the worker runs in an Auto Scaling group (ASG_NAME) or WORKER_METRICS=1,
so local runs and tests never call CloudWatch unless asked. Publishing never raises: failures are logged and
that minute's datapoints are dropped.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import telemetry
from shared.aws import client
from shared.settings import WorkerSettings

log = logging.getLogger("gpu_worker.metrics")

FLUSH_INTERVAL_S = 60.0
SAMPLE_INTERVAL_S = 10.0
MAX_VALUES_PER_DATUM = 150  # PutMetricData's limit on a datum's Values
MAX_DATUMS_PER_REQUEST = 20  # well under PutMetricData's limit on a request (and its 1 MB)
MAX_BUFFERED = 20_000  # datapoints held between two flushes at most; the oldest go first
DEFAULT_BACKEND = "gpu-fleet"
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
]

MILLISECONDS = "Milliseconds"
COUNT = "Count"
PERCENT = "Percent"
NONE = "None"


@dataclass(frozen=True)
class GpuSample:
    utilization: float  # percent
    memory_used: float  # percent of the GPU's memory


def parse_gpu_query(text: str) -> list[GpuSample]:
    """Lines of `utilization, memory.used, memory.total` (nvidia-smi csv, noheader, nounits); bad lines skipped."""
    samples = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            utilization, used, total = (float(part) for part in parts)
        except ValueError:  # "[N/A]", "[Not Supported]"
            continue
        if total > 0:
            samples.append(GpuSample(utilization, 100.0 * used / total))
    return samples


def query_gpus(environ: Mapping[str, str] | None = None) -> list[GpuSample]:
    """This process's GPU (CUDA_VISIBLE_DEVICES; all GPUs when unset); [] without nvidia-smi or on any error."""
    env = os.environ if environ is None else environ
    if not shutil.which("nvidia-smi"):
        return []
    command = list(NVIDIA_SMI_QUERY)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        visible = visible.strip()
        if not visible or visible.startswith("-1") or visible == "NoDevFiles":  # no GPU visible to this process
            return []
        command += ["-i", visible]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return []
    return parse_gpu_query(result.stdout)


@dataclass(frozen=True)
class _Point:
    name: str
    dimensions: tuple[tuple[str, str], ...]
    unit: str
    value: float
    timestamp: datetime


class NullMetrics:
    """Metrics switched off: every call does nothing."""

    enabled = False

    def record_batch(self, stage_type: str, duration_ms: float, batch_size: int) -> None:
        pass

    def set_busy(self, busy: bool) -> None:
        pass

    def record_failure(self, code: str) -> None:
        pass

    def sample(self) -> None:
        pass

    def flush(self) -> int:
        return 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class WorkerMetrics:
    """Buffers the worker's datapoints and publishes them to CloudWatch (see the module's docstring)."""

    enabled = True

    def __init__(
        self,
        cloudwatch: Any,
        *,
        namespace: str,
        stage: str,
        backend: str,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
        gpu_sampler: Callable[[], list[GpuSample]] = query_gpus,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cloudwatch = cloudwatch
        self.namespace = namespace
        self._dimensions = ((telemetry.DIM_STAGE, stage), (telemetry.DIM_BACKEND, backend))
        self.flush_interval_s = flush_interval_s
        self.sample_interval_s = sample_interval_s
        self._gpu_sampler = gpu_sampler
        self._clock = clock
        self._now = now
        self._buffer: deque[_Point] = deque(maxlen=MAX_BUFFERED)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._busy = False
        self._last_flush = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> WorkerMetrics | NullMetrics:
        """Metrics to CloudWatch in an Auto Scaling group (ASG_NAME) or with WORKER_METRICS=1; else a no-op."""
        env = os.environ if environ is None else environ
        if not settings.asg_name and env.get("WORKER_METRICS") != "1":
            return NullMetrics()
        return cls(
            client("cloudwatch", settings),
            namespace=settings.metrics_namespace,
            stage=settings.stage,
            backend=env.get("BACKEND") or DEFAULT_BACKEND,
            **kwargs,
        )

    # --- recording (any thread) ---

    def _add(self, name: str, unit: str, value: float, extra: tuple[tuple[str, str], ...] = ()) -> None:
        if not math.isfinite(value):
            return
        point = _Point(name, self._dimensions + extra, unit, float(value), self._now())
        with self._lock:
            self._buffer.append(point)

    def record_batch(self, stage_type: str, duration_ms: float, batch_size: int) -> None:
        """One batched model call: its duration (per stage type) and how many executions it served."""
        self._add(telemetry.STAGE_DURATION_MS, MILLISECONDS, duration_ms, ((telemetry.DIM_STAGE_TYPE, stage_type),))
        self._add(telemetry.BATCH_SIZE, COUNT, batch_size)

    def record_failure(self, code: str) -> None:
        """An execution this worker ended FAILED, by its error code (BAD_INPUT, OUT_OF_MEMORY, TIMEOUT, INTERNAL)."""
        self._add(telemetry.EXECUTION_FAILURES, COUNT, 1.0, ((telemetry.DIM_FAILURE_CODE, code),))

    def set_busy(self, busy: bool) -> None:
        """The worker started or stopped holding messages (also sampled every `sample_interval_s`)."""
        self._busy = busy
        self._add(telemetry.WORKER_BUSY, NONE, 1.0 if busy else 0.0)

    def sample(self) -> None:
        """Sample the GPU(s) and the busy state."""
        self._add(telemetry.WORKER_BUSY, NONE, 1.0 if self._busy else 0.0)
        try:
            samples = self._gpu_sampler()
        except Exception as exc:
            log.debug("GPU sampling failed: %s", exc)
            samples = []
        for gpu in samples:
            self._add(telemetry.GPU_UTILIZATION, PERCENT, gpu.utilization)
            self._add(telemetry.GPU_MEMORY_USED, PERCENT, gpu.memory_used)

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    # --- publishing ---

    def maybe_flush(self) -> int:
        """Flush if `flush_interval_s` has passed since the last flush."""
        if self._clock() - self._last_flush < self.flush_interval_s:
            return 0
        return self.flush()

    def flush(self) -> int:
        """Send everything buffered; returns how many datapoints CloudWatch took. Never raises."""
        with self._flush_lock:
            self._last_flush = self._clock()
            with self._lock:
                points = list(self._buffer)
                self._buffer.clear()
            if not points:
                return 0
            datums = _datums(points)
            sent = 0
            for start in range(0, len(datums), MAX_DATUMS_PER_REQUEST):
                chunk = datums[start : start + MAX_DATUMS_PER_REQUEST]
                try:
                    self._cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=chunk)
                except Exception as exc:  # throttling, network, permissions: metrics must never stop the work
                    log.warning("could not publish %d metric datum(s) to %s: %s", len(chunk), self.namespace, exc)
                    continue
                sent += int(sum(sum(datum["Counts"]) for datum in chunk))
            return sent

    # --- the background thread ---

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            try:
                self.sample()
                self.maybe_flush()
            except Exception:  # keep the thread alive whatever happens
                log.exception("metrics thread error")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and publish what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()


def _datums(points: list[_Point]) -> list[dict[str, Any]]:
    """One datum per metric, dimensions and unit, its values counted (at most MAX_VALUES_PER_DATUM per datum)."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...], str], list[_Point]] = {}
    for point in points:
        groups.setdefault((point.name, point.dimensions, point.unit), []).append(point)
    datums = []
    for (name, dimensions, unit), group in groups.items():
        counts = Counter(round(point.value, 3) for point in group)
        values = sorted(counts)
        timestamp = max(point.timestamp for point in group)
        for start in range(0, len(values), MAX_VALUES_PER_DATUM):
            chunk = values[start : start + MAX_VALUES_PER_DATUM]
            datums.append(
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": key, "Value": value} for key, value in dimensions],
                    "Unit": unit,
                    "Timestamp": timestamp,
                    "Values": chunk,
                    "Counts": [float(counts[value]) for value in chunk],
                }
            )
    return datums
