"""The GPU fleet of one backend, from constructs per concern (the VPC is the stack's shared `infra.network`):

- `bundle`: the worker's code and its locked wheels, shipped as assets and installed offline;
- `role`: the instance role, each grant on a named resource (its own asset objects, queue, group, logs);
- `group`: launch template (pinned AMI, IMDSv2), Auto Scaling group, lifecycle hooks, rollout, notices;
- `scaling`: target tracking on (visible + in flight) / in service, the idle scale-in alarms, and the
  `FleetStarter` that sizes every group from the live queue counts every minute.

An instance boots, unpacks both assets and runs `install.sh` (no package index), then waits in `Pending:Wait`
until its workers report ready (gpu_worker/readiness.py). docs/ops.md has the maths and the costs.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import StagehubConfig
from infra.data import Data
from infra.gpu_fleet.bundle import wheelhouse_asset_path, worker_code_path, worker_files, worker_requirements
from infra.gpu_fleet.group import APP_DIR, ENV_FILE, INSTANCE_WARMUP_S, WHEELS_DIR, WorkerGroup
from infra.gpu_fleet.role import InstanceRole
from infra.gpu_fleet.scaling import FleetScaling, FleetStarter
from infra.gpu_fleet.versions import FILES_DIR
from infra.network import Network
from infra.queues import QueuePair, Queues
from shared import resources as res
from shared import telemetry

MODEL_CACHE_DIR = "/var/cache/stagehub/models"
COMPILE_CACHE_DIR = "/var/cache/stagehub/torch-compile"  # the fast profile's compiled kernels (instance disk)

__all__ = ["FILES_DIR", "FleetStarter", "GpuFleet", "worker_files", "worker_requirements"]


class GpuFleet(Construct):
    """One backend's workers: an Auto Scaling group of GPU instances consuming that backend's in-queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StagehubConfig,
        backend: str,
        network: Network,
        data: Data,
        queues: Queues,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.backend = backend
        self.in_queue: QueuePair = queues.in_queues[backend]
        self.group_name = f"stagehub-{config.stage}-{backend}"
        self.code = s3_assets.Asset(self, "WorkerCode", path=worker_code_path(config.termination_grace_s))
        wheels_path, wheels_options = wheelhouse_asset_path(config.skip_layer_build)
        self.wheels = s3_assets.Asset(self, "WorkerWheels", path=wheels_path, **wheels_options)
        self.workers = WorkerGroup(self, "Workers", config=config, network=network, group_name=self.group_name)
        self.instance_role = InstanceRole(
            self,
            "Instance",
            config=config,
            backend=backend,
            group_name=self.group_name,
            in_queue=self.in_queue,
            data=data,
            queues=queues,
            assets=[self.code, self.wheels],
            log_group=self.workers.log_group,
        )
        self.role = self.instance_role.role
        self._write_user_data(data, queues)
        self.workers.build(self.role)
        self.group = self.workers.group
        self.launch_template = self.workers.launch_template
        self.launch_hook_name = self.workers.launch_hook_name
        self.lifecycle_hook_name = self.workers.termination_hook_name
        self.scaling = FleetScaling(
            self,
            "Scaling",
            config=config,
            group=self.group,
            group_name=self.group_name,
            in_queue=self.in_queue,
            warmup_s=INSTANCE_WARMUP_S,
        )
        self.target_tracking = self.scaling.target_tracking

    def notify(self, topic: sns.ITopic) -> None:
        self.workers.notify(topic)

    def worker_environment(self, data: Data, queues: Queues) -> dict[str, str]:
        """The worker's settings (shared.settings field names in upper case)."""
        config = self._config
        stack = cdk.Stack.of(self)
        env = {
            "STAGE": config.stage,
            "BACKEND": self.backend,
            "AWS_REGION": cdk.Aws.REGION,
            "AWS_DEFAULT_REGION": cdk.Aws.REGION,
            self.in_queue.spec.env_var: self.in_queue.queue.queue_url,
            res.OUT_QUEUE.env_var: queues.out.queue.queue_url,
            res.BACKEND_QUEUES_ENV_VAR: stack.to_json_string({self.backend: self.in_queue.queue.queue_url}),
            "MODELS": config.models_json(),
            "DEFAULT_MODELS": config.default_models_json(),
            "BATCH_WINDOW_MS": str(config.batch_window_ms),
            "MAX_BATCH_SIZE": str(config.max_batch_size),
            "PERFORMANCE_PROFILE": config.performance_profile,
            "WARM_UP_SIZES": json.dumps(list(config.warm_up_sizes)),
            "COMPILE_CACHE_DIR": COMPILE_CACHE_DIR,
            "ASG_NAME": self.group_name,
            "LIFECYCLE_HOOK_NAME": self.workers.termination_hook_name,
            "LAUNCH_HOOK_NAME": self.workers.launch_hook_name,
            "READY_TIMEOUT_S": str(config.ready_timeout_s),
            "MODEL_CACHE_DIR": MODEL_CACHE_DIR,
            "METRICS_NAMESPACE": telemetry.NAMESPACE,
            "WORKER_LOG_GROUP": self.workers.log_group.log_group_name,
            "DEVICE": "cuda",
        }
        for spec in res.TABLES:
            env[spec.env_var] = data.table(spec).table_name
        for bucket in res.BUCKETS:
            env[bucket.env_var] = data.bucket(bucket).bucket_name
        return env

    def _write_user_data(self, data: Data, queues: Queues) -> None:
        """Download both assets (the role reads exactly these two objects), unpack, write the settings, install."""
        user_data = self.workers.user_data
        user_data.add_commands("set -euxo pipefail", f"mkdir -p {APP_DIR} {WHEELS_DIR} /etc/stagehub")
        code = user_data.add_s3_download_command(
            bucket=self.code.bucket, bucket_key=self.code.s3_object_key, local_file="/opt/stagehub/worker.zip"
        )
        wheels = user_data.add_s3_download_command(
            bucket=self.wheels.bucket, bucket_key=self.wheels.s3_object_key, local_file="/opt/stagehub/wheels.zip"
        )
        lines = [
            f"{key}='{_single_quoted(value)}'" for key, value in sorted(self.worker_environment(data, queues).items())
        ]
        user_data.add_commands(
            f"python3 -m zipfile -e {code} {APP_DIR}",
            f"python3 -m zipfile -e {wheels} {WHEELS_DIR}",
            f"cat > {ENV_FILE} <<'STAGEHUB_ENV'",
            *lines,
            "STAGEHUB_ENV",
            f"chmod 0640 {ENV_FILE}",
            f"bash {APP_DIR}/install.sh",
        )


def _single_quoted(value: str) -> str:
    """A value for a systemd EnvironmentFile inside single quotes, where nothing is special but the quote."""
    if "'" in str(value):
        raise ValueError(f"worker setting values cannot contain a single quote: {value!r}")
    return value
