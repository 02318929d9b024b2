"""Names of the custom CloudWatch metrics: emitted by the functions and the worker, graphed by the dashboard.

Functions emit through Powertools Metrics (EMF); the worker through PutMetricData. Both use NAMESPACE
(settings.metrics_namespace) and the dimension names below, so the dashboard's queries match.
"""

from __future__ import annotations

NAMESPACE = "Stagehub"

# Dimensions
DIM_STAGE = "Stage"  # deployment stage name (dev, prod, ...)
DIM_BACKEND = "Backend"
DIM_STAGE_TYPE = "StageType"  # txt2img, txt2txt, img2img

# Emitted by the results consumer and the DLQ handler (dimensions: Stage)
EXECUTIONS_STARTED = "ExecutionsStarted"
EXECUTIONS_SUCCEEDED = "ExecutionsSucceeded"
EXECUTIONS_FAILED = "ExecutionsFailed"
EXECUTIONS_CANCELLED = "ExecutionsCancelled"
EXECUTIONS_DEAD_LETTERED = "ExecutionsDeadLettered"
# Emitted by the executions API (dimensions: Stage)
EXECUTIONS_SUBMITTED = "ExecutionsSubmitted"

# Emitted by the worker (dimensions: Stage, Backend; StageDuration also StageType)
STAGE_DURATION_MS = "StageDuration"  # milliseconds
BATCH_SIZE = "BatchSize"  # count of executions in one batched model call
GPU_UTILIZATION = "GpuUtilization"  # percent
GPU_MEMORY_USED = "GpuMemoryUsed"  # percent
WORKER_BUSY = "WorkerBusy"  # 1 while holding a message, 0 idle

# Emitted by the worker for each execution it ends FAILED (dimensions: Stage, Backend, FailureCode)
EXECUTION_FAILURES = "WorkerExecutionFailures"
DIM_FAILURE_CODE = "FailureCode"  # BAD_INPUT, OUT_OF_MEMORY, TIMEOUT, INTERNAL
