"""Least privilege, declared: the AWS calls each Lambda function's code makes on our tables, buckets, queues and
secret, and nothing more.

`infra.functions` grants exactly these. Two tests hold the table to both sides: `tests/infra/test_permissions.py`
compares every role's synthesized policy with it (a grant wider than the table fails), and
`tests/integration/test_permission_calls.py` records the calls each function's code makes on the moto stack and
finds each in it (a call added without its entry fails there, not as AccessDenied in AWS). Helpers adding a
function or a call add its entry here. Notes on the less obvious:
- pynamodb's `TransactWrite` needs the item actions it contains (there is no TransactWriteItems IAM action);
- S3 HeadObject is `s3:GetObject`; `s3:ListBucket` on a bucket makes a missing key answer 404 (not 403),
  which the code relies on to tell "no such upload" (422) from a failure (503), and lists a prefix to delete it;
  deleting objects is `s3:DeleteObject` only (no `DeleteObjectVersion`: old pipeline versions expire by lifecycle);
- a queue consumer's event source mapping polls with ReceiveMessage/DeleteMessage/GetQueueAttributes (plus
  GetQueueUrl and ChangeMessageVisibility, which CDK's SQS event source grants with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared import resources as res


class Queues(StrEnum):
    """Which of our queues a grant names."""

    IN = "in"  # every backend's in-queue
    IN_DLQ = "in-dlq"  # every backend's in-queue dead-letter queue
    OUT = "out"
    WEBHOOKS = "webhooks"  # events to deliver (functions.webhooks)
    WEBHOOKS_DLQ = "webhooks-dlq"  # events whose retries are exhausted


@dataclass(frozen=True)
class TableAccess:
    table: res.TableSpec
    actions: tuple[str, ...]  # DynamoDB actions on the table itself (without "dynamodb:")
    index_actions: tuple[str, ...] = ()  # on its global secondary indexes (`<table>/index/*`)


@dataclass(frozen=True)
class BucketAccess:
    bucket: res.BucketSpec
    object_actions: tuple[str, ...]  # S3 actions on its objects (`<bucket>/*`)
    bucket_actions: tuple[str, ...] = ()  # on the bucket itself (ListBucket)


@dataclass(frozen=True)
class QueueAccess:
    queues: Queues
    actions: tuple[str, ...]  # SQS actions (without "sqs:")


@dataclass(frozen=True)
class SecretAccess:
    """The JWT signing secret."""

    actions: tuple[str, ...] = ("GetSecretValue",)


@dataclass(frozen=True)
class MetricsReadAccess:
    """CloudWatch metric reads (GET /backends' recent throughput); CloudWatch has no resource ARNs for them."""

    actions: tuple[str, ...] = ("GetMetricStatistics",)


Access = TableAccess | BucketAccess | QueueAccess | SecretAccess | MetricsReadAccess

_CONSUME = ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ChangeMessageVisibility")

# Ending an execution and admitting the user's next (functions/executions/admission.py): conditional updates
# and transactions of the execution and the user's admission item.
_END = ("GetItem", "BatchGetItem", "UpdateItem")
_ADMIT = ("GetItem", "PutItem", "UpdateItem")

FUNCTION_ACCESS: dict[str, tuple[Access, ...]] = {
    "auth": (
        SecretAccess(),
        TableAccess(res.USERS, ("GetItem", "PutItem"), index_actions=("Query",)),
        TableAccess(res.REFRESH_TOKENS, ("GetItem", "PutItem", "UpdateItem")),
        TableAccess(res.SESSIONS, ("GetItem", "PutItem", "UpdateItem")),
        TableAccess(res.THROTTLES, ("GetItem", "PutItem", "UpdateItem", "DeleteItem")),
    ),
    "authorizer": (SecretAccess(),),
    "pipelines": (
        TableAccess(res.USERS, (), index_actions=("Query",)),
        # A rating is one transaction: the pipeline still exists, the user's rating, the totals item.
        TableAccess(
            res.PIPELINES,
            ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"),
            index_actions=("Query",),
        ),
        TableAccess(res.RATINGS, ("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "BatchWriteItem")),
        BucketAccess(res.PIPELINES_BUCKET, ("GetObject", "PutObject", "DeleteObject"), ("ListBucket",)),
        BucketAccess(res.UPLOADS_BUCKET, ("GetObject",), ("ListBucket",)),
    ),
    "uploads": (BucketAccess(res.UPLOADS_BUCKET, ("PutObject",)),),  # signs presigned PUTs
    "executions": (
        TableAccess(
            res.EXECUTIONS, ("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"), index_actions=("Query",)
        ),
        TableAccess(res.IDEMPOTENCY, ("GetItem", "PutItem", "DeleteItem")),
        TableAccess(res.ADMISSION, _ADMIT),
        TableAccess(res.PIPELINES, ("GetItem",)),
        BucketAccess(res.PIPELINES_BUCKET, ("GetObject",), ("ListBucket",)),
        BucketAccess(res.UPLOADS_BUCKET, ("GetObject",), ("ListBucket",)),
        BucketAccess(res.RESULTS_BUCKET, ("GetObject", "PutObject", "DeleteObject"), ("ListBucket",)),
        QueueAccess(Queues.IN, ("SendMessage", "GetQueueAttributes")),  # GET /backends reads the depth
        QueueAccess(Queues.WEBHOOKS, ("SendMessage",)),  # completed event of a cancelled queued execution
        MetricsReadAccess(),
    ),
    "docs": (),
    "webhooks": (
        TableAccess(res.WEBHOOKS, ("GetItem", "PutItem", "Query")),
        TableAccess(res.EXECUTIONS, ("GetItem",)),
    ),
    "results": (
        TableAccess(res.EXECUTIONS, _END, index_actions=("Query",)),
        TableAccess(res.ADMISSION, _ADMIT),
        QueueAccess(Queues.IN, ("SendMessage",)),  # admits the user's next execution
        # A finished event of a deleted execution purges the outputs it wrote late.
        BucketAccess(res.RESULTS_BUCKET, ("DeleteObject",), ("ListBucket",)),
        TableAccess(res.WEBHOOKS, ("UpdateItem",)),  # the 5 s throttle of progress events
        QueueAccess(Queues.OUT, _CONSUME),
        QueueAccess(Queues.WEBHOOKS, ("SendMessage",)),
    ),
    "dlq": (
        TableAccess(res.EXECUTIONS, _END, index_actions=("Query",)),
        TableAccess(res.ADMISSION, _ADMIT),
        QueueAccess(Queues.IN, ("SendMessage",)),
        TableAccess(res.WEBHOOKS, ("UpdateItem",)),
        QueueAccess(Queues.IN_DLQ, _CONSUME),
        QueueAccess(Queues.WEBHOOKS, ("SendMessage",)),
    ),
    "sweep": (
        TableAccess(res.EXECUTIONS, _END, index_actions=("Query",)),
        TableAccess(res.ADMISSION, _ADMIT),
        QueueAccess(Queues.IN, ("SendMessage",)),
    ),
    "webhooksender": (
        TableAccess(res.WEBHOOKS, ("GetItem", "PutItem", "UpdateItem")),
        QueueAccess(Queues.WEBHOOKS, (*_CONSUME, "SendMessage")),  # consumes, and re-sends retries
        QueueAccess(Queues.WEBHOOKS_DLQ, ("SendMessage",)),  # retries exhausted
    ),
}


def reads_secret(function: str) -> bool:
    """Whether the function is given the JWT secret's ARN (it may read the secret)."""
    return any(isinstance(access, SecretAccess) for access in FUNCTION_ACCESS.get(function, ()))


Grant = tuple[str, str]  # (IAM action, resource name: "table:users", "table:users/index/*", "bucket:uploads/*", ...)


def declared_grants(function: str) -> set[Grant]:
    """The table's entries of `function` as (action, resource name) pairs, as the tests compare them."""
    grants: set[Grant] = set()
    for access in FUNCTION_ACCESS[function]:
        if isinstance(access, SecretAccess):
            grants |= {(f"secretsmanager:{a}", "secret:jwt") for a in access.actions}
        elif isinstance(access, TableAccess):
            table = f"table:{access.table.logical_id}"
            grants |= {(f"dynamodb:{a}", table) for a in access.actions}
            grants |= {(f"dynamodb:{a}", f"{table}/index/*") for a in access.index_actions}
        elif isinstance(access, MetricsReadAccess):
            grants |= {(f"cloudwatch:{a}", "*") for a in access.actions}
        elif isinstance(access, BucketAccess):
            bucket = f"bucket:{access.bucket.logical_id}"
            grants |= {(f"s3:{a}", f"{bucket}/*") for a in access.object_actions}
            grants |= {(f"s3:{a}", bucket) for a in access.bucket_actions}
        else:
            grants |= {(f"sqs:{a}", f"queue:{access.queues}") for a in access.actions}
    return grants
