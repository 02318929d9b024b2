"""AWS calls per API request: `python -m bench.cost_model [--items N ...]` (part of `make bench`).

Every handler runs in this process against moto, its clients counted through botocore's `before-call` event on
the process's one session (`shared.aws`): every store and record calls through it. A request's figure is the
calls of its second run (the first one's are a cold start's: same calls, plus nothing else, but counted apart).
The results consumer's calls are measured per out-queue event of one execution (started, progress, finished).
The list endpoints are measured with N pipelines of one author (default 100 and 10,000): a page is one Query
whatever N is, so the calls do not grow. Write units are not measured (moto does not report consumed capacity);
the DynamoDB writes are counted per operation.

Writes bench/results/cost-model.json and .md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.cold_start import RESULTS, _proxy

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
PASSWORD = "correct horse battery"  # noqa: S105  # a bench user on moto


class _Calls:
    """Counts the AWS operations made through the shared botocore session."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.seen[f"{model.service_model.service_name}:{model.name}"] += 1

    def measure(self, request: Callable[[], Any]) -> tuple[dict[str, int], Any]:
        self.seen.clear()
        answer = request()
        return dict(self.seen), answer


class _Context:
    function_name = "bench"
    aws_request_id = "bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _as(user_id: str, event: dict[str, Any], query: dict[str, str] | None = None) -> dict[str, Any]:
    event["requestContext"]["authorizer"] = {"principalId": user_id, "userId": user_id}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    return event


def _body(answer: dict[str, Any]) -> Any:
    return json.loads(answer["body"]) if answer.get("body") else None


def measure(item_counts: list[int]) -> dict[str, Any]:
    from local.moto import MotoServer
    from local.provision import provision
    from shared import aws
    from shared.models import PipelineRecord, bind_models
    from shared.settings import clear_cached_settings, get_settings

    with MotoServer() as moto:
        os.environ.update(
            provision(moto.endpoint_url)
            | {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            | {"JWT_SECRET": "bench-secret-bench-secret-bench-secret", "POWERTOOLS_METRICS_DISABLED": "true"}
        )
        clear_cached_settings()
        bind_models(get_settings())
        calls = _Calls()
        aws._session().register("before-call.*.*", calls)
        from functions.auth.handler import lambda_handler as auth
        from functions.executions.handler import lambda_handler as executions
        from functions.pipelines.handler import lambda_handler as pipelines

        def call(handler: Callable[..., Any], event: dict[str, Any]) -> dict[str, Any]:
            return handler(event, _Context())  # type: ignore[no-any-return]

        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        credentials = {"email": email, "password": PASSWORD}
        user = _body(call(auth, _proxy("POST", "/auth/register", "/auth/register", credentials)))["userId"]
        stages = [{"type": "txt2txt", "inline": True, "body": "hello", "parameters": {}}]
        create = {"name": "cost", "description": "", "stages": stages}
        created = call(pipelines, _as(user, _proxy("POST", "/pipelines", "/pipelines", create)))
        pipeline_id = _body(created)["pipelineId"]
        requests: dict[str, Callable[[], dict[str, Any]]] = {
            "POST /auth/login": lambda: call(auth, _proxy("POST", "/auth/login", "/auth/login", credentials)),
            "GET /users/me": lambda: call(auth, _as(user, _proxy("GET", "/users/me", "/users/me"))),
            "POST /pipelines": lambda: call(pipelines, _as(user, _proxy("POST", "/pipelines", "/pipelines", create))),
            "GET /pipelines/{id}": lambda: call(
                pipelines,
                _as(user, _path(_proxy("GET", f"/pipelines/{pipeline_id}", "/pipelines/{pipelineId}"))),
            ),
            "POST /pipelines/{id}/executions": lambda: call(
                executions,
                _as(
                    user,
                    _path(
                        _proxy(
                            "POST",
                            f"/pipelines/{pipeline_id}/executions",
                            "/pipelines/{pipelineId}/executions",
                            {"variables": {}},
                        )
                    ),
                ),
            ),
            "GET /executions": lambda: call(executions, _as(user, _proxy("GET", "/executions", "/executions"))),
        }
        per_request: dict[str, Any] = {}
        for name, request in requests.items():
            request()  # the first one is a cold start's
            seen, answer = calls.measure(request)
            per_request[name] = _figures(answer["statusCode"], seen)
        from functions.results.handler import lambda_handler as results

        execution = _body(requests["POST /pipelines/{id}/executions"]())
        submitted, owner = execution["executionId"], execution["userId"]  # the worker's events name the owner
        lifecycle: dict[str, dict[str, Any]] = {
            "started": {},
            "progress": {"progress": _progress(50)},
            "finished": {"success": True},
        }
        for event_name, fields in lifecycle.items():
            out_queue = get_settings().out_queue_url or ""
            event = _sqs_event(_out_event(submitted, event_name, userId=owner, **fields), out_queue)
            seen, answer = calls.measure(functools.partial(call, results, event))
            status = 500 if answer["batchItemFailures"] else 200  # 500: the consumer gave the message back
            per_request[f"results consumer: {event_name}"] = _figures(status, seen)

        lists: dict[str, Any] = {}
        author = str(uuid.uuid4())  # an author with only these pipelines
        made = 0
        for count in sorted(item_counts):
            _log(f"{count} pipelines of one author")
            with PipelineRecord.batch_write() as batch:
                for n in range(made, count):
                    stamp = f"2026-01-01T00:00:{n:06d}Z"
                    batch.save(_pipeline_record(PipelineRecord, author, stamp))
            made = count
            mine = _as(user, _path(_proxy("GET", f"/users/{author}/pipelines", "/users/{userId}/pipelines")))
            everyone = _as(user, _proxy("GET", "/pipelines", "/pipelines"))
            seen, answer = calls.measure(functools.partial(call, pipelines, mine))
            all_seen, all_answer = calls.measure(functools.partial(call, pipelines, everyone))
            lists[str(count)] = {
                "GET /users/{id}/pipelines": {"status": answer["statusCode"], "calls": seen},
                "GET /pipelines": {"status": all_answer["statusCode"], "calls": all_seen},
            }
    return {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "requests": per_request, "lists": lists}


def _figures(status: int, seen: dict[str, int]) -> dict[str, Any]:
    writes = sum(n for operation, n in seen.items() if operation.split(":")[1] in WRITES)
    return {"status": status, "calls": seen, "total": sum(seen.values()), "dynamodb_writes": writes}


def _progress(percent: int) -> dict[str, int]:
    return {"stage": 0, "stages": 1, "step": percent // 10, "steps": 10, "percent": percent}


def _out_event(execution_id: str, event: str, **fields: Any) -> str:
    """An out-queue message as the worker sends it."""
    body = {"executionId": execution_id, "executionUri": None, "success": False, "version": 1, "event": event}
    return json.dumps(body | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | fields)


def _sqs_event(body: str, queue_url: str) -> dict[str, Any]:
    name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    record = {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": str(uuid.uuid4()),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{name}",
        "awsRegion": "us-east-1",
    }
    return {"Records": [record]}


def _path(event: dict[str, Any]) -> dict[str, Any]:
    """Path parameters from the event's resource template and path."""
    names = [part[1:-1] for part in event["resource"].split("/") if part.startswith("{")]
    values = [
        value
        for template, value in zip(event["resource"].split("/"), event["path"].split("/"), strict=True)
        if template.startswith("{")
    ]
    event["pathParameters"] = dict(zip(names, values, strict=True)) or None
    return event


def _pipeline_record(record_class: Any, author: str, stamp: str) -> Any:
    pipeline_id = str(uuid.uuid4())
    return record_class(
        pipeline_id=pipeline_id,
        name="listed",
        author=author,
        author_name="bench",
        created_at=stamp,
        sort_key=f"{stamp}#{pipeline_id}",
        stage_count=1,
        definition_key=f"pipelines/{pipeline_id}.json",
    )


def _log(message: str) -> None:
    print(f"[cost-model] {message}", file=sys.stderr, flush=True)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"AWS calls per request (the second of two; moto, {results['measured_at']}). Write units are not measured.",
        "",
        "| request | status | AWS calls | DynamoDB writes | calls by operation |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results["requests"].items():
        detail = ", ".join(f"{op} {n}" for op, n in sorted(figures["calls"].items()))
        counts = f"{figures['total']} | {figures['dynamodb_writes']}"
        lines.append(f"| `{name}` | {figures['status']} | {counts} | {detail} |")
    lines += ["", "| list endpoint | items | status | AWS calls |", "|---|---|---|---|"]
    for count, endpoints in results["lists"].items():
        for name, figures in endpoints.items():
            detail = ", ".join(f"{op} {n}" for op, n in sorted(figures["calls"].items()))
            lines.append(f"| `{name}` | {count} | {figures['status']} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100, 10_000])
    args = parser.parse_args(argv)
    results = measure(args.items)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost-model.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "cost-model.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
