"""Lambda cold starts as Lambda runs them: `python -m bench.cold_start [--repeats N]` (part of `make bench`).

Each handler runs in a fresh interpreter of the Lambda runtime's Python (`infra.packaging.runtime_python()`),
with `-I -S` and nothing on `sys.path` but the standard library, the function asset and the dependency layer,
both built by `infra.packaging` (the layer for this machine's platform instead of arm64, byte-compiled the
same way). It imports the handler (the cold import), then answers one request against the provisioned moto
stack (cold import + first request) and reports how many AWS clients that made. The best of `--repeats` per
handler is kept (the handlers take turns, so a slow spell of a shared machine does not hit one handler only).

Writes bench/results/lambda-cold-start.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from functions.routes import API_FUNCTIONS, AUTHORIZER_MODULE, DLQ_HANDLER_MODULE, RESULTS_CONSUMER_MODULE
from infra.packaging import LAMBDA_PYTHON_VERSION, LAYER_REQUIREMENTS, function_asset_dir, install_layer, layer_hash
from infra.packaging import runtime_python as find_runtime_python

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LAYER_CACHE = ROOT / ".cache" / "bench-lambda-layer"
TARGETS_MS = {"cold_import": 150, "cold_import_and_first_request": 300}
USER_ID = "00000000-0000-4000-8000-000000000001"

# Runs inside the measured interpreter: argv = [asset, layer, event file, module]; prints one JSON line.
_PROBE = """
import json, sys, time
asset, layer, event_file, module = sys.argv[1:5]
sys.path[:0] = [asset, layer]
started = time.perf_counter()
handler = __import__(module, fromlist=["lambda_handler"]).lambda_handler
imported = time.perf_counter()
class Context:
    function_name = "bench"; aws_request_id = "bench"; memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    def get_remaining_time_in_millis(self): return 30000
try:
    answer = handler(json.load(open(event_file)), Context())
    outcome = str(answer.get("statusCode", "ok")) if isinstance(answer, dict) else "ok"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:80]
answered = time.perf_counter()
clients = sys.modules.get("shared.aws")
made = clients.clients_made() if clients else 0
print(json.dumps({"import_ms": (imported - started) * 1000, "total_ms": (answered - started) * 1000,
                  "outcome": outcome, "clients": made, "boto3": "boto3" in sys.modules,
                  "xray": "aws_xray_sdk" in sys.modules}))
"""


def _log(message: str) -> None:
    print(f"[cold-start] {message}", file=sys.stderr, flush=True)


def local_layer() -> Path:
    """The dependency layer for this machine's platform, built once per requirements (cached under .cache)."""
    machine = platform.machine()
    target = LAYER_CACHE / f"{layer_hash(LAMBDA_PYTHON_VERSION)[:16]}-{machine}"
    if not (target / "python").is_dir():
        _log(f"building the dependency layer for {machine} into {target} (pip, then bytecode)")
        platforms = (f"manylinux2014_{machine}", f"manylinux_2_28_{machine}")
        install_layer(LAYER_REQUIREMENTS, target, LAMBDA_PYTHON_VERSION, platforms)
    return target / "python"


def _proxy(method: str, path: str, resource: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/bench{path}",
            "stage": "bench",
            "requestId": "bench",
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"principalId": USER_ID, "userId": USER_ID},
        },
    }


def _sqs(body: dict[str, Any]) -> dict[str, Any]:
    record = {"messageId": "m1", "receiptHandle": "r1", "body": json.dumps(body), "attributes": {}}
    return {"Records": [record | {"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"}]}


def first_requests() -> dict[str, dict[str, Any]]:
    """Each handler's first request: a typical one (reads of an empty stack; a login that fails)."""
    return {
        API_FUNCTIONS["docs"]: _proxy("GET", "/health", "/health"),
        API_FUNCTIONS["auth"]: _proxy(
            "POST", "/auth/login", "/auth/login", {"email": "nobody@example.com", "password": "wrong password"}
        ),
        API_FUNCTIONS["pipelines"]: _proxy("GET", "/pipelines", "/pipelines"),
        API_FUNCTIONS["uploads"]: _proxy(
            "POST", "/uploads", "/uploads", {"contentType": "text/plain", "sizeBytes": 10}
        ),
        API_FUNCTIONS["executions"]: _proxy("GET", "/executions", "/executions"),
        AUTHORIZER_MODULE: {
            "type": "TOKEN",
            "authorizationToken": "Bearer not-a-token",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/bench/GET/executions",
        },
        RESULTS_CONSUMER_MODULE: _sqs({"executionId": "missing", "event": "started", "version": 1}),
        DLQ_HANDLER_MODULE: _sqs({"executionId": "missing", "resUri": "s3://b/k", "version": 1}),
    }


def measure(repeats: int) -> dict[str, Any]:
    from local.moto import MotoServer
    from local.provision import provision

    python = find_runtime_python()
    if python is None:
        raise SystemExit(f"no python{LAMBDA_PYTHON_VERSION} on this machine (pyenv or PATH): nothing to measure")
    layer, asset = local_layer(), function_asset_dir()
    load_before = os.getloadavg()[0]
    events = first_requests()
    samples: dict[str, list[dict[str, Any]]] = {module: [] for module in events}
    with MotoServer() as moto, tempfile.TemporaryDirectory(prefix="stagehub-cold-") as scratch:
        environment = provision(moto.endpoint_url) | {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "JWT_SECRET": "bench-secret-bench-secret-bench-secret",
            "POWERTOOLS_METRICS_NAMESPACE": "Stagehub",
        }
        for round_number in range(1, repeats + 1):
            _log(f"round {round_number}/{repeats}")
            for module, event in events.items():
                event_file = Path(scratch) / f"{module}.json"
                event_file.write_text(json.dumps(event))
                command = [str(python), "-I", "-S", "-c", _PROBE, str(asset), str(layer), str(event_file), module]
                done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
                samples[module].append(json.loads(done.stdout.strip().splitlines()[-1]))
    handlers = {}
    for module, runs in samples.items():
        best = min(runs, key=lambda run: run["total_ms"])
        handlers[module] = {
            "cold_import_ms": round(min(run["import_ms"] for run in runs), 1),
            "cold_import_and_first_request_ms": round(best["total_ms"], 1),
            "median_cold_import_and_first_request_ms": round(statistics.median(r["total_ms"] for r in runs), 1),
            "first_request": best["outcome"],
            "aws_clients": best["clients"],
            "imports_boto3": best["boto3"],
            "imports_xray": best["xray"],
        }
    return {
        "python": subprocess.run([str(python), "-V"], capture_output=True, text=True, check=True).stdout.strip(),
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "repeats": repeats,
        "targets_ms": TARGETS_MS,
        "handlers": handlers,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['python']} with `-I -S`, only the function asset and the layer on `sys.path` (both byte-compiled "
        f"by it), {results['machine']}, {results['measured_at']}; best of {results['repeats']} per handler; "
        f"1-minute load average {results['load_average_1m']['before']} before, {results['load_average_1m']['after']} "
        "after (a shared machine: figures scale with it).",
        "",
        f"| handler | cold import (target ≤ {TARGETS_MS['cold_import']} ms) | cold import + first request "
        f"(≤ {TARGETS_MS['cold_import_and_first_request']} ms) | first request | AWS clients |",
        "|---|---|---|---|---|",
    ]
    for module, figures in results["handlers"].items():
        lines.append(
            f"| `{module}` | {figures['cold_import_ms']} ms | {figures['cold_import_and_first_request_ms']} ms "
            f"| {figures['first_request']} | {figures['aws_clients']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = measure(args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lambda-cold-start.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "lambda-cold-start.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
