"""The one definition of every table, bucket and queue: used by the CDK app, the local stack and the tests.

Each resource has a logical id, a physical name derived from the stage name, and the environment variable
through which its name (or URL) reaches the Lambda functions and the worker (see `shared.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STAGE = "dev"
DEFAULT_BACKEND = "gpu-fleet"


@dataclass(frozen=True)
class KeySpec:
    """A DynamoDB key attribute (all our keys are strings)."""

    name: str
    type: str = "S"


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index: all attributes projected, or (`projection`) only the keys or some attributes."""

    name: str
    hash_key: KeySpec
    range_key: KeySpec | None = None
    projection: str = "ALL"  # ALL | KEYS_ONLY | INCLUDE
    non_key_attributes: tuple[str, ...] = ()  # with INCLUDE: the attributes copied into the index


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    env_var: str
    hash_key: KeySpec
    range_key: KeySpec | None = None
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str | None = None

    def physical_name(self, stage: str) -> str:
        return f"stagehub-{stage}-{self.logical_id}"


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    env_var: str
    expire_days: int | None = None  # lifecycle expiry of every object; None keeps them
    versioned: bool = False
    cors_put: bool = False  # browsers PUT uploads straight to presigned URLs

    def physical_name(self, stage: str, account: str = "000000000000") -> str:
        # Bucket names are global: the account id keeps two deployments apart.
        return f"stagehub-{stage}-{self.logical_id}-{account}"


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    env_var: str
    visibility_timeout_s: int
    max_receive_count: int = 5
    retention_s: int = 4 * 24 * 3600
    dlq_retention_s: int = 14 * 24 * 3600
    dlq_env_var: str | None = None

    def physical_name(self, stage: str) -> str:
        return f"stagehub-{stage}-{self.logical_id}"

    def dlq_physical_name(self, stage: str) -> str:
        return f"stagehub-{stage}-{self.logical_id}-dlq"


SORT_KEY = KeySpec("sortKey")  # "<createdAt>#<id>": newest first, ties broken by id

USERS = TableSpec(
    logical_id="users",
    env_var="USERS_TABLE",
    hash_key=KeySpec("email"),
    indexes=(IndexSpec("userId-index", KeySpec("userId")),),
)
REFRESH_TOKENS = TableSpec(
    logical_id="refresh-tokens",
    env_var="REFRESH_TOKENS_TABLE",
    hash_key=KeySpec("tokenHash"),
    ttl_attribute="expiresAt",
)
PIPELINES = TableSpec(
    logical_id="pipelines",
    env_var="PIPELINES_TABLE",
    hash_key=KeySpec("pipelineId"),
    indexes=(
        IndexSpec("author-index", KeySpec("author"), SORT_KEY),
        # listPartition is "ALL#<shard>" (PIPELINE_LIST_SHARDS shards): the list merges the shards newest first,
        # so creations spread over that many index partitions instead of one.
        IndexSpec("all-index", KeySpec("listPartition"), SORT_KEY),
    ),
)
PIPELINE_LIST_SHARDS = 8
# The ratings table holds each user's rating (userId = the rater) and one totals item per pipeline under this
# userId, which no user id (a UUID) can equal.
RATING_TOTALS_USER = "#totals"
RATINGS = TableSpec(
    logical_id="ratings",
    env_var="RATINGS_TABLE",
    hash_key=KeySpec("pipelineId"),
    range_key=KeySpec("userId"),
)
# The execution indexes hold keys only (lists read the records by BatchGetItem), so a progress or cancel write
# rewrites no index entry; only a status change moves the user-status entry. `waitingShard` is set while an
# execution waits for admission (functions/executions/admission.py): the user-status index carries it so that a
# user's oldest waiting execution is found in that user's QUEUED partition, and the sparse waiting index lists
# every waiting execution for the sweep.
EXECUTIONS = TableSpec(
    logical_id="executions",
    env_var="EXECUTIONS_TABLE",
    hash_key=KeySpec("executionId"),
    indexes=(
        IndexSpec("user-index", KeySpec("userId"), SORT_KEY, projection="KEYS_ONLY"),
        IndexSpec(  # "<userId>#<status>"
            "user-status-index",
            KeySpec("userStatus"),
            SORT_KEY,
            projection="INCLUDE",
            non_key_attributes=("waitingShard", "backend", "requestUri"),
        ),
        IndexSpec(  # "<pipelineId>#<userId>"
            "pipeline-user-index", KeySpec("pipelineUser"), SORT_KEY, projection="KEYS_ONLY"
        ),
        IndexSpec(  # "w#<n>": only executions waiting for admission
            "waiting-index", KeySpec("waitingShard"), SORT_KEY, projection="INCLUDE", non_key_attributes=("userId",)
        ),
    ),
    ttl_attribute="expiresAt",
)
# One item per user: the executions admitted to a backend's queue (a string set of ids), how many wait, and the
# usage of the current UTC day (functions/executions/admission.py).
ADMISSION = TableSpec(
    logical_id="admission",
    env_var="ADMISSION_TABLE",
    hash_key=KeySpec("userId"),
    ttl_attribute="expiresAt",
)
IDEMPOTENCY = TableSpec(
    logical_id="idempotency",
    env_var="IDEMPOTENCY_TABLE",
    hash_key=KeySpec("idempotencyKey"),  # "<userId>#<Idempotency-Key header>"
    ttl_attribute="expiresAt",
)
# Auth: one record per login (a refresh-token family), so logout is one write whatever the family's size.
SESSIONS = TableSpec(
    logical_id="sessions",
    env_var="SESSIONS_TABLE",
    hash_key=KeySpec("familyId"),
    ttl_attribute="expiresAt",
)
# Auth: TTL'd counters of login failures (per email, per client address) and registrations (per address).
THROTTLES = TableSpec(
    logical_id="throttles",
    env_var="THROTTLES_TABLE",
    hash_key=KeySpec("throttleKey"),
    ttl_attribute="expiresAt",
)
TABLES: tuple[TableSpec, ...] = (USERS, REFRESH_TOKENS, PIPELINES, RATINGS, EXECUTIONS, IDEMPOTENCY)
TABLES += (SESSIONS, THROTTLES, ADMISSION)

PIPELINES_BUCKET = BucketSpec("pipelines", "PIPELINES_BUCKET", versioned=True)
UPLOADS_BUCKET = BucketSpec("uploads", "UPLOADS_BUCKET", expire_days=30, cors_put=True)
RESULTS_BUCKET = BucketSpec("results", "RESULTS_BUCKET", expire_days=30)
BUCKETS: tuple[BucketSpec, ...] = (PIPELINES_BUCKET, UPLOADS_BUCKET, RESULTS_BUCKET)

# The worker holds an in-queue message for a whole execution and extends visibility by heartbeat (every third
# of it, see gpu_worker.heartbeat), so the timeout only has to cover the gap between heartbeats: a lost instance's
# messages come back within about a minute (a crashed process's at once, see gpu_worker.held).
IN_QUEUE_VISIBILITY_S = 60
# The results consumer's Lambda timeout is 30 s; AWS asks for a visibility timeout of at least 6 times it.
OUT_QUEUE_VISIBILITY_S = 180


def in_queue_spec(backend: str) -> QueueSpec:
    """The in-queue of one inference backend (one queue per backend, each with its own DLQ)."""
    return QueueSpec(
        logical_id=f"{backend}-in",
        env_var="IN_QUEUE_URL",
        visibility_timeout_s=IN_QUEUE_VISIBILITY_S,
        max_receive_count=3,
    )


OUT_QUEUE = QueueSpec(
    logical_id="out",
    env_var="OUT_QUEUE_URL",
    visibility_timeout_s=OUT_QUEUE_VISIBILITY_S,
    max_receive_count=5,
    dlq_env_var="OUT_DLQ_URL",
)

BACKENDS: tuple[str, ...] = (DEFAULT_BACKEND,)
# Backends reach functions as one JSON object {"<backend>": "<in-queue url>"}.
BACKEND_QUEUES_ENV_VAR = "BACKEND_QUEUES"
# The in-queue DLQs reach the DLQ handler the same way.
BACKEND_DLQS_ENV_VAR = "BACKEND_DLQS"


@dataclass(frozen=True)
class ResourceNames:
    """Physical names of every resource for one stage (and account, for buckets)."""

    stage: str = DEFAULT_STAGE
    account: str = "000000000000"
    backends: tuple[str, ...] = field(default=BACKENDS)

    def table(self, spec: TableSpec) -> str:
        return spec.physical_name(self.stage)

    def bucket(self, spec: BucketSpec) -> str:
        return spec.physical_name(self.stage, self.account)

    def queue(self, spec: QueueSpec) -> str:
        return spec.physical_name(self.stage)

    def dlq(self, spec: QueueSpec) -> str:
        return spec.dlq_physical_name(self.stage)


# --- webhooks (API.md, "Events: wait, webhooks, backends") ---

# One table for the webhook side: the users' signing secrets ("user#<id>" / "secret"), each execution's
# delivery state ("execution#<id>" / "state": progress throttle, 410 stop) and its delivery log
# ("execution#<id>" / "delivery#<at>#<webhookId>#<attempt>", newest first by sort key).
WEBHOOKS = TableSpec(
    logical_id="webhooks",
    env_var="WEBHOOKS_TABLE",
    hash_key=KeySpec("pk"),
    range_key=KeySpec("sk"),
    ttl_attribute="expiresAt",
)
TABLES = (*TABLES, WEBHOOKS)

# The webhook sender's Lambda timeout is 30 s (one delivery of at most 10 s, plus DNS and the log write).
WEBHOOK_QUEUE_VISIBILITY_S = 180
# Events waiting for delivery (and their retries, each re-sent with DelaySeconds); a message that makes the
# sender itself fail this many times goes to the DLQ, as does an event whose retries are exhausted.
WEBHOOK_QUEUE = QueueSpec(
    logical_id="webhooks",
    env_var="WEBHOOK_QUEUE_URL",
    visibility_timeout_s=WEBHOOK_QUEUE_VISIBILITY_S,
    max_receive_count=5,
    dlq_env_var="WEBHOOK_DLQ_URL",
)
