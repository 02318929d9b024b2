"""The worker's CloudWatch metrics: buffered, flushed with PutMetricData (names, dimensions, units), never raising,
and switched off entirely unless the worker runs in an Auto Scaling group or WORKER_METRICS=1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from gpu_worker import metrics as metrics_module
from gpu_worker.metrics import GpuSample, NullMetrics, WorkerMetrics, parse_gpu_query, query_gpus
from shared import telemetry
from tests.unit.execution_fakes import unit_settings
from tests.unit.worker.fakes import ScriptedRunner
from tests.unit.worker.test_worker_failures import Harness

NAMESPACE = "Stagehub"
BASE_DIMS = [{"Name": telemetry.DIM_STAGE, "Value": "dev"}, {"Name": telemetry.DIM_BACKEND, "Value": "gpu-fleet"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def _metrics(cloudwatch: Any, clock: FakeClock | None = None, gpus: list[GpuSample] | None = None) -> WorkerMetrics:
    return WorkerMetrics(
        cloudwatch,
        namespace=NAMESPACE,
        stage="dev",
        backend="gpu-fleet",
        gpu_sampler=lambda: list(gpus or []),
        clock=clock or FakeClock(),
    )


def _statistics(cloudwatch: Any, name: str, dimensions: list[dict[str, str]], unit: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=3600,
        Statistics=["SampleCount", "Sum", "Maximum"],
        Unit=unit,
    )["Datapoints"]
    assert len(points) == 1, points
    return dict(points[0])


# --- switched off ---


def test_metrics_are_a_no_op_outside_an_auto_scaling_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(*args: Any) -> Any:
        raise AssertionError("no CloudWatch client off the fleet")

    monkeypatch.setattr(metrics_module, "client", no_client)
    metrics = WorkerMetrics.from_settings(unit_settings(asg_name=""), environ={})
    assert isinstance(metrics, NullMetrics)
    assert metrics.enabled is False
    metrics.start()
    metrics.record_batch("txt2img", 12.0, 2)
    metrics.set_busy(True)
    metrics.sample()
    assert metrics.flush() == 0
    metrics.stop()


@pytest.mark.parametrize(
    ("asg_name", "environ"),
    [("stagehub-dev-gpu-fleet", {}), ("", {"WORKER_METRICS": "1"})],
)
def test_metrics_are_on_in_the_group_or_when_asked(
    monkeypatch: pytest.MonkeyPatch, asg_name: str, environ: dict[str, str]
) -> None:
    made: list[str] = []

    def fake_client(service: str, settings: object) -> object:
        made.append(service)
        return object()

    monkeypatch.setattr(metrics_module, "client", fake_client)
    settings = unit_settings(asg_name=asg_name, stage="dev", metrics_namespace="Custom")
    metrics = WorkerMetrics.from_settings(settings, environ=environ | {"BACKEND": "sdxl"})
    assert isinstance(metrics, WorkerMetrics)
    assert made == ["cloudwatch"]
    assert metrics.namespace == "Custom"
    metrics.record_batch("txt2img", 1.0, 1)
    metrics.set_busy(True)
    assert metrics.pending() == 3


def test_the_backend_defaults_to_gpu_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "client", lambda service, settings: object())
    metrics = WorkerMetrics.from_settings(unit_settings(asg_name="g"), environ={})
    assert isinstance(metrics, WorkerMetrics)
    assert (telemetry.DIM_BACKEND, "gpu-fleet") in metrics._dimensions


# --- publishing ---


def test_flush_publishes_names_dimensions_and_units(cloudwatch: Any) -> None:
    metrics = _metrics(cloudwatch, gpus=[GpuSample(utilization=40.0, memory_used=25.0)])
    metrics.record_batch("txt2img", 120.0, 3)
    metrics.record_batch("txt2img", 80.0, 1)
    metrics.record_batch("txt2txt", 10.0, 1)
    metrics.set_busy(True)
    metrics.sample()  # busy again, and one GPU sample
    assert metrics.flush() == 10
    assert metrics.pending() == 0

    listed = cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]
    found = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))) for m in listed}
    base = (("Backend", "gpu-fleet"), ("Stage", "dev"))
    assert found == {
        (telemetry.STAGE_DURATION_MS, (*base, ("StageType", "txt2img"))),
        (telemetry.STAGE_DURATION_MS, (*base, ("StageType", "txt2txt"))),
        (telemetry.BATCH_SIZE, base),
        (telemetry.WORKER_BUSY, base),
        (telemetry.GPU_UTILIZATION, base),
        (telemetry.GPU_MEMORY_USED, base),
    }
    txt2img = [*BASE_DIMS, {"Name": telemetry.DIM_STAGE_TYPE, "Value": "txt2img"}]
    duration = _statistics(cloudwatch, telemetry.STAGE_DURATION_MS, txt2img, "Milliseconds")
    assert (duration["SampleCount"], duration["Sum"], duration["Maximum"]) == (2, 200, 120)
    batch = _statistics(cloudwatch, telemetry.BATCH_SIZE, BASE_DIMS, "Count")
    assert (batch["SampleCount"], batch["Sum"]) == (3, 5)
    assert _statistics(cloudwatch, telemetry.GPU_UTILIZATION, BASE_DIMS, "Percent")["Maximum"] == 40
    assert _statistics(cloudwatch, telemetry.GPU_MEMORY_USED, BASE_DIMS, "Percent")["Maximum"] == 25
    busy = _statistics(cloudwatch, telemetry.WORKER_BUSY, BASE_DIMS, "None")
    assert (busy["SampleCount"], busy["Sum"]) == (2, 2)


def test_the_request_carries_values_and_counts_per_metric() -> None:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    metrics = _metrics(cloudwatch)
    metrics.record_batch("img2img", 50.0, 2)
    metrics.record_batch("img2img", 50.0, 2)
    with Stubber(cloudwatch) as stub:
        stub.add_response(
            "put_metric_data",
            {},
            {
                "Namespace": NAMESPACE,
                "MetricData": [
                    {
                        "MetricName": "StageDuration",
                        "Dimensions": [*BASE_DIMS, {"Name": "StageType", "Value": "img2img"}],
                        "Unit": "Milliseconds",
                        "Timestamp": ANY,
                        "Values": [50.0],
                        "Counts": [2.0],
                    },
                    {
                        "MetricName": "BatchSize",
                        "Dimensions": BASE_DIMS,
                        "Unit": "Count",
                        "Timestamp": ANY,
                        "Values": [2.0],
                        "Counts": [2.0],
                    },
                ],
            },
        )
        assert metrics.flush() == 4
        stub.assert_no_pending_responses()


def test_flushes_at_most_once_a_minute() -> None:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    clock = FakeClock()
    metrics = _metrics(cloudwatch, clock)
    with Stubber(cloudwatch) as stub:  # a call without a queued response would fail the test
        metrics.record_batch("txt2img", 5.0, 1)
        clock.now += 59.9
        assert metrics.maybe_flush() == 0
        assert metrics.pending() == 2
        stub.add_response("put_metric_data", {})
        clock.now += 0.1
        assert metrics.maybe_flush() == 2
        stub.assert_no_pending_responses()
        metrics.record_batch("txt2img", 5.0, 1)
        clock.now += 30
        assert metrics.maybe_flush() == 0  # a minute since the last flush, not since the first datapoint


def test_a_failed_publish_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    metrics = _metrics(cloudwatch)
    metrics.record_batch("txt2img", 5.0, 1)
    with Stubber(cloudwatch) as stub, caplog.at_level(logging.WARNING, logger="gpu_worker.metrics"):
        stub.add_client_error("put_metric_data", "AccessDenied", "not in this namespace", http_status_code=403)
        assert metrics.flush() == 0
    assert "could not publish" in caplog.text
    assert metrics.pending() == 0


def test_large_buffers_are_split_into_several_requests() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.requests: list[list[dict[str, Any]]] = []

        def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:  # noqa: N803
            self.requests.append(MetricData)

    recorder = Recorder()
    metrics = _metrics(recorder)
    for n in range(400):  # 400 distinct durations of one stage type: 3 datums of at most 150 values
        metrics.record_batch("txt2img", float(n), 1)
    for n in range(30):  # 30 more stage types: 30 more datums
        metrics.record_batch(f"type{n}", 1.0, 1)
    assert metrics.flush() == 860
    datums = [datum for request in recorder.requests for datum in request]
    assert [len(request) for request in recorder.requests] == [20, 14]
    durations = [d for d in datums if d["MetricName"] == "StageDuration" and d["Dimensions"][2]["Value"] == "txt2img"]
    assert [len(d["Values"]) for d in durations] == [150, 150, 100]
    assert sorted(v for d in durations for v in d["Values"]) == [float(n) for n in range(400)]
    assert [d["Counts"] for d in datums if d["MetricName"] == "BatchSize"] == [[430.0]]


def test_stop_publishes_what_is_left(cloudwatch: Any) -> None:
    metrics = _metrics(cloudwatch)
    metrics.set_busy(False)
    metrics.stop()
    assert metrics.pending() == 0
    assert [m["MetricName"] for m in cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]] == ["WorkerBusy"]


# --- GPU sampling ---


def test_nvidia_smi_output_is_parsed_to_percentages() -> None:
    text = "37, 6144, 24576\n[N/A], 1, 2\n100, 80000, 81920\nnonsense\n"
    assert parse_gpu_query(text) == [GpuSample(37.0, 25.0), GpuSample(100.0, 100.0 * 80000 / 81920)]


def test_no_nvidia_smi_means_no_gpu_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module.shutil, "which", lambda name: None)
    assert query_gpus({}) == []


def test_only_the_visible_gpu_is_queried(monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    class Result:
        stdout = "12, 100, 400\n"

    def run(command: list[str], **kwargs: Any) -> Result:
        commands.append(command)
        return Result()

    monkeypatch.setattr(metrics_module.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(metrics_module.subprocess, "run", run)
    assert query_gpus({"CUDA_VISIBLE_DEVICES": "2"}) == [GpuSample(12.0, 25.0)]
    assert commands[-1][-2:] == ["-i", "2"]
    assert query_gpus({}) == [GpuSample(12.0, 25.0)]
    assert "-i" not in commands[-1]
    assert query_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []  # no GPU for this process
    assert len(commands) == 2


def test_a_failing_sampler_does_not_break_sampling(cloudwatch: Any) -> None:
    def broken() -> list[GpuSample]:
        raise RuntimeError("driver gone")

    metrics = WorkerMetrics(cloudwatch, namespace=NAMESPACE, stage="dev", backend="gpu-fleet", gpu_sampler=broken)
    metrics.sample()
    assert metrics.pending() == 1  # WorkerBusy only


# --- the worker's hook ---


class RecordingMetrics:
    def __init__(self) -> None:
        self.batches: list[tuple[str, float, int]] = []
        self.failures: list[str] = []

    def record_batch(self, stage_type: str, duration_ms: float, batch_size: int) -> None:
        self.batches.append((stage_type, duration_ms, batch_size))

    def record_failure(self, code: str) -> None:
        self.failures.append(code)


def test_the_worker_records_each_batch_that_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RecordingMetrics()
    h = Harness(monkeypatch, ScriptedRunner(kind="text"), max_batch_size=2, metrics=recorder)
    for n in range(3):
        h.submit(f"e{n}", f"p{n}", stages=["txt2txt"])
    h.run_until_idle()
    assert [(stage_type, size) for stage_type, _, size in recorder.batches] == [("txt2txt", 2), ("txt2txt", 1)]
    assert all(duration >= 0 for _, duration, _ in recorder.batches)


def test_a_failed_batch_records_no_duration_and_its_failure_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import BadInput

    def behaviour(prompts: list[str]) -> None:
        raise BadInput("no")

    recorder = RecordingMetrics()
    h = Harness(monkeypatch, ScriptedRunner(behaviour), metrics=recorder)
    h.submit("e1", "x")
    h.run_until_idle()
    assert recorder.batches == []
    assert recorder.failures == ["BAD_INPUT"]


def test_the_failure_metric_carries_its_code_as_a_dimension(cloudwatch: Any) -> None:
    metrics = _metrics(cloudwatch)
    metrics.record_failure("BAD_INPUT")
    metrics.record_failure("BAD_INPUT")
    metrics.record_failure("TIMEOUT")
    metrics.flush()
    dims = [*BASE_DIMS, {"Name": telemetry.DIM_FAILURE_CODE, "Value": "BAD_INPUT"}]
    assert _statistics(cloudwatch, telemetry.EXECUTION_FAILURES, dims, "Count")["Sum"] == 2


def test_a_worker_without_metrics_uses_the_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ScriptedRunner())
    assert isinstance(h.worker.metrics, NullMetrics)
    h.submit("e1", "x")
    h.run_until_idle()
    assert h.finished("e1")["status"] == "SUCCEEDED"
