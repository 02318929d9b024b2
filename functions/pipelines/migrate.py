"""One-off migration of pipelines written before the sharded list: `python -m functions.pipelines.migrate`.

Such a pipeline sits in the list partition `ALL` and carries its rating totals (`ratingSum`, `ratingCount`) on
its own item. For each, one transaction adds those totals into the pipeline's totals item of the ratings table
(an `ADD`, so ratings made by the new code meanwhile are kept) and moves the pipeline to its shard, removing the
old attributes, on condition that it is still in `ALL`: running it twice, or concurrently, moves nothing twice.
"""

from __future__ import annotations

import argparse
from typing import Any

from botocore.exceptions import ClientError

from functions.pipelines.store import list_partition
from shared import resources as res

LEGACY_PARTITION = "ALL"
_ALL_INDEX = "all-index"


def _legacy_items(dynamodb: Any, pipelines_table: str) -> Any:
    paginator = dynamodb.get_paginator("query")
    for page in paginator.paginate(
        TableName=pipelines_table,
        IndexName=_ALL_INDEX,
        KeyConditionExpression="listPartition = :all",
        ExpressionAttributeValues={":all": {"S": LEGACY_PARTITION}},
    ):
        yield from page["Items"]


def _move(pipeline_id: str, item: dict[str, Any], pipelines_table: str, ratings_table: str) -> list[dict[str, Any]]:
    move = {
        "Update": {
            "TableName": pipelines_table,
            "Key": {"pipelineId": {"S": pipeline_id}},
            "UpdateExpression": "SET listPartition = :shard REMOVE ratingSum, ratingCount",
            "ConditionExpression": "listPartition = :all",
            "ExpressionAttributeValues": {
                ":shard": {"S": list_partition(pipeline_id)},
                ":all": {"S": LEGACY_PARTITION},
            },
        }
    }
    count = int(item.get("ratingCount", {}).get("N", "0"))
    if not count:
        return [move]
    totals = {
        "Update": {
            "TableName": ratings_table,
            "Key": {"pipelineId": {"S": pipeline_id}, "userId": {"S": res.RATING_TOTALS_USER}},
            "UpdateExpression": "ADD ratingSum :sum, ratingCount :count",
            "ExpressionAttributeValues": {":sum": item["ratingSum"], ":count": {"N": str(count)}},
        }
    }
    return [totals, move]


def migrate(dynamodb: Any, pipelines_table: str, ratings_table: str) -> int:
    """Move every legacy pipeline to its shard with its totals; returns how many this run moved."""
    moved = 0
    for item in _legacy_items(dynamodb, pipelines_table):
        pipeline_id = item["pipelineId"]["S"]
        try:
            dynamodb.transact_write_items(TransactItems=_move(pipeline_id, item, pipelines_table, ratings_table))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            continue  # moved (or deleted) by a concurrent run; the index read was eventually consistent
        moved += 1
    return moved


def main() -> None:
    import botocore.session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines-table", required=True)
    parser.add_argument("--ratings-table", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args()
    dynamodb = botocore.session.get_session().create_client("dynamodb", region_name=args.region)
    print(f"moved {migrate(dynamodb, args.pipelines_table, args.ratings_table)} pipelines to the sharded list")


if __name__ == "__main__":
    main()
