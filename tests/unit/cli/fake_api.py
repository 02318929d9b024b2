"""An in-memory stand-in for the stagehub API (API.md's paths, bodies and status codes) behind httpx.MockTransport.

Enough of the contract for the client and CLI tests: single-use refresh tokens, pipelines with ratings, presigned
uploads, executions that advance one scripted step per status poll, results with presigned image URLs.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from stagehub_cli.client import StagehubClient
from stagehub_cli.tokens import MemoryTokenStore, TokenStore

BASE_URL = "http://api.test"
BLOB_URL = "http://blobs.test"
# A 1x1 PNG, so downloads can be checked byte for byte.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
NOW = "2026-11-23T10:00:00Z"

# What a status poll shows, step by step, for a two-stage run that succeeds.
SUCCESS_SCRIPT: list[tuple[str, dict[str, int] | None]] = [
    ("QUEUED", None),
    ("RUNNING", {"stage": 1, "stages": 2, "step": 1, "steps": 2, "percent": 25}),
    ("RUNNING", {"stage": 2, "stages": 2, "step": 1, "steps": 2, "percent": 75}),
    ("SUCCEEDED", {"stage": 2, "stages": 2, "step": 2, "steps": 2, "percent": 100}),
]


def error(status: int, code: str, message: str, details: list[Any] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return httpx.Response(status, json=body)


@dataclass
class FakeApi:
    """Call it with an httpx.Request (it is a MockTransport handler). `requests` records every request seen."""

    script: list[tuple[str, dict[str, int] | None]] = field(default_factory=lambda: list(SUCCESS_SCRIPT))
    final_error: dict[str, str] | None = None
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> user (+ password)
    access: dict[str, str] = field(default_factory=dict)  # access token -> userId
    refresh: dict[str, str] = field(default_factory=dict)  # live refresh token -> userId
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratings: dict[tuple[str, str], int] = field(default_factory=dict)
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before serving normally
    # Wait mode and backends (API.md, "Events"): off by default, as on a server that predates them.
    secrets: dict[str, str] = field(default_factory=dict)  # userId -> webhook secret
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # executionId -> attempts, oldest first
    honours_wait: bool = False  # answer `Prefer: wait=N` with `Preference-Applied` (one script step per answer)
    backends: list[dict[str, Any]] | None = None  # GET /backends items; None: the endpoint does not exist (404)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    # ---- helpers for tests ----

    def client(self, token_store: TokenStore | None = None, **kwargs: Any) -> StagehubClient:
        kwargs.setdefault("sleep", lambda _s: None)
        store = token_store or MemoryTokenStore()
        return StagehubClient(BASE_URL, token_store=store, transport=self.transport(), **kwargs)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def expire_access_tokens(self) -> None:
        self.access.clear()

    def seen(self, method: str, path: str) -> int:
        return sum(1 for request in self.requests if request.method == method and request.url.path == path)

    # ---- the handler ----

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return error(status, {429: "THROTTLED"}.get(status, "SERVICE_UNAVAILABLE"), "try again")
        if request.url.host == "blobs.test":
            return self._blob(request)
        body = json.loads(request.content) if request.content else {}
        segments = [part for part in request.url.path.split("/") if part]
        public = self._public(request.method, segments, body)
        if public is not None:
            return public
        user_id = self._caller(request)
        if user_id is None:
            return error(401, "UNAUTHORIZED", "missing or invalid token")
        return self._route(request, segments, body, user_id)

    def _blob(self, request: httpx.Request) -> httpx.Response:
        key = request.url.path
        if request.method == "PUT":
            self.blobs[key] = request.content
            return httpx.Response(200)
        if key not in self.blobs:
            return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")
        return httpx.Response(200, content=self.blobs[key])

    def _caller(self, request: httpx.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return self.access.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None

    def _pair(self, user_id: str) -> dict[str, Any]:
        number = next(self._counter)
        access, refresh = f"access-{number}", f"refresh-{number}"
        self.access[access] = user_id
        self.refresh[refresh] = user_id
        return {"accessToken": access, "refreshToken": refresh, "tokenType": "Bearer", "expiresIn": 900}

    def _public(self, method: str, segments: list[str], body: dict[str, Any]) -> httpx.Response | None:
        if segments == ["health"]:
            return httpx.Response(200, json={"status": "ok"})
        if method != "POST" or segments[:1] != ["auth"]:
            return None
        action = segments[1]
        if action == "register":
            email = str(body.get("email", "")).lower()
            if len(body.get("password", "")) < 10:
                return error(422, "VALIDATION_FAILED", "the request failed validation",
                             [{"loc": ["body", "password"], "message": "too short"}])  # fmt: skip
            if email in self.users:
                return error(409, "CONFLICT", "email already registered")
            name = body.get("displayName") or email.split("@")[0]
            user = {"userId": str(uuid.uuid4()), "email": email, "displayName": name}
            self.users[email] = {**user, "password": body["password"]}
            return httpx.Response(201, json=user)
        if action == "login":
            known = self.users.get(str(body.get("email", "")).lower())
            if not known or known["password"] != body.get("password"):
                return error(401, "UNAUTHORIZED", "wrong email or password")
            return httpx.Response(200, json=self._pair(known["userId"]))
        if action == "refresh":
            user_id = self.refresh.pop(body.get("refreshToken", ""), None)
            if user_id is None:
                return error(401, "UNAUTHORIZED", "invalid refresh token")
            return httpx.Response(200, json=self._pair(user_id))
        if action == "logout":
            self.refresh.pop(body.get("refreshToken", ""), None)
            return httpx.Response(204)
        return error(404, "NOT_FOUND", "no such route")

    def _route(self, request: httpx.Request, segments: list[str], body: dict[str, Any], user_id: str) -> httpx.Response:
        method = request.method
        routes: list[tuple[str, list[str], Callable[..., httpx.Response]]] = [
            ("GET", ["users", "me"], lambda: self._me(user_id)),
            ("GET", ["stage-types"], self._stage_types),
            ("POST", ["pipelines"], lambda: self._create_pipeline(body, user_id)),
            ("GET", ["pipelines"], lambda: self._page(list(self.pipelines.values()), request, summary=True)),
            ("GET", ["users", "*", "pipelines"], lambda: self._user_pipelines(segments[1], user_id, request)),
            ("GET", ["pipelines", "*"], lambda: self._pipeline(segments[1], user_id)),
            ("DELETE", ["pipelines", "*"], lambda: self._delete_pipeline(segments[1], user_id)),
            ("GET", ["pipelines", "*", "rating"], lambda: self._rating(segments[1], user_id)),
            ("PUT", ["pipelines", "*", "rating"], lambda: self._rate(segments[1], user_id, body)),
            ("POST", ["uploads"], lambda: self._upload(body, user_id)),
            ("POST", ["pipelines", "*", "executions"], lambda: self._run(segments[1], user_id, body, request)),
            ("GET", ["pipelines", "*", "executions"], lambda: self._pipeline_executions(segments[1], user_id, request)),
            ("GET", ["executions"], lambda: self._executions(user_id, request)),
            ("GET", ["executions", "*"], lambda: self._waited(request, self._poll(segments[1], user_id))),
            ("GET", ["executions", "*", "result"], lambda: self._result(segments[1], user_id)),
            ("POST", ["executions", "*", "cancel"], lambda: self._cancel(segments[1], user_id)),
            ("DELETE", ["executions", "*"], lambda: self._delete_execution(segments[1], user_id)),
            ("GET", ["backends"], self._backends),
            ("GET", ["users", "me", "webhook-secret"], lambda: self._secret(user_id, rotate=False)),
            ("POST", ["users", "me", "webhook-secret"], lambda: self._secret(user_id, rotate=True)),
            ("GET", ["executions", "*", "webhook-deliveries"], lambda: self._deliveries(segments[1], user_id, request)),
        ]
        for route_method, pattern, serve in routes:
            if route_method != method or len(pattern) != len(segments):
                continue
            if all(part in ("*", seg) for part, seg in zip(pattern, segments, strict=True)):
                return serve()
        return error(404, "NOT_FOUND", "no such route")

    def _me(self, user_id: str) -> httpx.Response:
        user = next(u for u in self.users.values() if u["userId"] == user_id)
        return httpx.Response(200, json={key: user[key] for key in ("userId", "email", "displayName")})

    def _stage_types(self) -> httpx.Response:
        schema = {"properties": {"steps": {"type": "integer", "default": 25, "minimum": 1, "maximum": 150}}}
        items = [{"type": "txt2img", "description": "Text to image.", "output": "image", "parameters": schema}]
        return httpx.Response(200, json={"items": items})

    def _page(self, items: list[dict[str, Any]], request: httpx.Request, summary: bool = False) -> httpx.Response:
        limit = int(request.url.params.get("limit", 20))
        start = int(request.url.params.get("cursor", "0"))
        chosen = items[::-1][start : start + limit]
        if summary:
            chosen = [self._summary(item) for item in chosen]
        more = start + limit < len(items)
        return httpx.Response(200, json={"items": chosen, "nextCursor": str(start + limit) if more else None})

    def _summary(self, pipeline: dict[str, Any]) -> dict[str, Any]:
        summary = {key: value for key, value in pipeline.items() if key != "stages"}
        return summary | {"stageCount": len(pipeline["stages"])}

    def _create_pipeline(self, body: dict[str, Any], user_id: str) -> httpx.Response:
        if not body.get("name") or not body.get("stages"):
            return error(422, "VALIDATION_FAILED", "name and stages are required")
        pipeline = {
            "pipelineId": str(uuid.uuid4()), "name": body["name"], "description": body.get("description", ""),
            "author": user_id, "authorName": "someone", "createdAt": NOW, "stages": body["stages"],
            "rating": {"average": None, "count": 0, "mine": None},
        }  # fmt: skip
        self.pipelines[pipeline["pipelineId"]] = pipeline
        return httpx.Response(201, json=pipeline)

    def _user_pipelines(self, owner: str, user_id: str, request: httpx.Request) -> httpx.Response:
        owner = user_id if owner == "me" else owner
        return self._page([p for p in self.pipelines.values() if p["author"] == owner], request, summary=True)

    def _pipeline(self, pipeline_id: str, user_id: str) -> httpx.Response:
        if pipeline_id not in self.pipelines:
            return error(404, "NOT_FOUND", "pipeline not found")
        return httpx.Response(200, json=self.pipelines[pipeline_id] | {"rating": self._rating_of(pipeline_id, user_id)})

    def _delete_pipeline(self, pipeline_id: str, user_id: str) -> httpx.Response:
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            return error(404, "NOT_FOUND", "pipeline not found")
        if pipeline["author"] != user_id:
            return error(403, "FORBIDDEN", "only the author may delete a pipeline")
        del self.pipelines[pipeline_id]
        return httpx.Response(204)

    def _rating_of(self, pipeline_id: str, user_id: str) -> dict[str, Any]:
        scores = [score for (pid, _), score in self.ratings.items() if pid == pipeline_id]
        return {
            "average": sum(scores) / len(scores) if scores else None,
            "count": len(scores),
            "mine": self.ratings.get((pipeline_id, user_id)),
        }

    def _rating(self, pipeline_id: str, user_id: str) -> httpx.Response:
        if pipeline_id not in self.pipelines:
            return error(404, "NOT_FOUND", "pipeline not found")
        return httpx.Response(200, json=self._rating_of(pipeline_id, user_id))

    def _rate(self, pipeline_id: str, user_id: str, body: dict[str, Any]) -> httpx.Response:
        if pipeline_id not in self.pipelines:
            return error(404, "NOT_FOUND", "pipeline not found")
        if self.pipelines[pipeline_id]["author"] == user_id:
            return error(403, "FORBIDDEN", "you cannot rate your own pipeline")
        self.ratings[(pipeline_id, user_id)] = body["score"]
        return httpx.Response(200, json=self._rating_of(pipeline_id, user_id))

    def _upload(self, body: dict[str, Any], user_id: str) -> httpx.Response:
        key = f"/uploads/{user_id}/{uuid.uuid4()}"
        url = f"{BLOB_URL}{key}?X-Amz-Signature=abc"
        return httpx.Response(201, json={"uri": f"s3://uploads{key}", "uploadUrl": url, "expiresIn": 900})

    def _run(self, pipeline_id: str, user_id: str, body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        if key and (user_id, key) in self.idempotency:
            return httpx.Response(202, json=self.executions[self.idempotency[(user_id, key)]])
        if pipeline_id not in self.pipelines:
            return error(404, "NOT_FOUND", "pipeline not found")
        execution = {
            "executionId": str(uuid.uuid4()), "pipelineId": pipeline_id, "userId": user_id,
            "backend": body.get("backend", "gpu-fleet"), "status": "QUEUED", "progress": None, "error": None,
            "createdAt": NOW, "startedAt": None, "finishedAt": None, "cancelRequested": False,
            "request": body,
        }  # fmt: skip
        self.executions[execution["executionId"]] = execution
        self.polls[execution["executionId"]] = 0
        if key:
            self.idempotency[(user_id, key)] = execution["executionId"]
        return httpx.Response(202, json=execution)

    def _owned(self, execution_id: str, user_id: str) -> dict[str, Any] | None:
        execution = self.executions.get(execution_id)
        return execution if execution and execution["userId"] == user_id else None

    def _executions(self, user_id: str, request: httpx.Request) -> httpx.Response:
        status = request.url.params.get("status")
        mine = [e for e in self.executions.values() if e["userId"] == user_id and status in (None, e["status"])]
        return self._page(mine, request)

    def _pipeline_executions(self, pipeline_id: str, user_id: str, request: httpx.Request) -> httpx.Response:
        mine = [e for e in self.executions.values() if e["userId"] == user_id and e["pipelineId"] == pipeline_id]
        return self._page(mine, request)

    def _poll(self, execution_id: str, user_id: str) -> httpx.Response:
        execution = self._owned(execution_id, user_id)
        if execution is None:
            return error(404, "NOT_FOUND", "execution not found")
        if execution["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            step = min(self.polls[execution_id], len(self.script) - 1)
            self.polls[execution_id] += 1
            execution["status"], execution["progress"] = self.script[step]
            if execution["status"] == "FAILED":
                execution["error"] = self.final_error
        return httpx.Response(200, json=execution)

    def _result(self, execution_id: str, user_id: str) -> httpx.Response:
        execution = self._owned(execution_id, user_id)
        if execution is None:
            return error(404, "NOT_FOUND", "execution not found")
        if execution["status"] != "SUCCEEDED":
            return error(409, "CONFLICT", f"the execution is {execution['status']}")
        key = f"/results/{execution_id}/stage1-0.png"
        self.blobs.setdefault(key, PNG_1X1)
        outputs = [
            {"stage": 0, "index": 0, "type": "text", "contentType": "text/plain", "text": "a red fox"},
            {"stage": 1, "index": 0, "type": "image", "contentType": "image/png", "url": f"{BLOB_URL}{key}?sig=1"},
        ]
        return httpx.Response(200, json={"executionId": execution_id, "outputs": outputs, "expiresIn": 900})

    def _cancel(self, execution_id: str, user_id: str) -> httpx.Response:
        execution = self._owned(execution_id, user_id)
        if execution is None:
            return error(404, "NOT_FOUND", "execution not found")
        if execution["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return error(409, "CONFLICT", f"the execution is already {execution['status']}")
        if execution["status"] == "QUEUED":
            execution["status"] = "CANCELLED"
        else:
            execution["cancelRequested"] = True
        return httpx.Response(202, json=execution)

    def _delete_execution(self, execution_id: str, user_id: str) -> httpx.Response:
        if self._owned(execution_id, user_id) is None:
            return error(404, "NOT_FOUND", "execution not found")
        del self.executions[execution_id]
        self.blobs.pop(f"/results/{execution_id}/stage1-0.png", None)
        return httpx.Response(204)

    def _waited(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        prefer = request.headers.get("Prefer", "")
        if self.honours_wait and prefer.startswith("wait="):
            response.headers["Preference-Applied"] = prefer
        return response

    def _backends(self) -> httpx.Response:
        if self.backends is None:
            return error(404, "NOT_FOUND", "no such route")
        return httpx.Response(200, json={"items": self.backends})

    def _secret(self, user_id: str, rotate: bool) -> httpx.Response:
        if rotate or user_id not in self.secrets:
            self.secrets[user_id] = "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()
        return httpx.Response(200, json={"secret": self.secrets[user_id]})

    def _deliveries(self, execution_id: str, user_id: str, request: httpx.Request) -> httpx.Response:
        if self._owned(execution_id, user_id) is None:
            return error(404, "NOT_FOUND", "execution not found")
        return self._page(self.deliveries.get(execution_id, []), request)
