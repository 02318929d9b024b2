"""A thin synchronous client for the stagehub HTTP API (../shared/API.md): one method per endpoint.

Retries with exponential backoff on 429/502/503/504 and on transport errors for requests that are safe to
repeat (GET, PUT, DELETE, and a POST carrying an Idempotency-Key); a request that never reached the server
(connection refused) is retried whatever its method. A 401 on an authorized call triggers one token refresh
(when a refresh token is held) and one replay; the new pair goes to the token store. Every non-2xx answer
raises `ApiError` with API.md's error body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json as jsonlib
import mimetypes
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from stagehub_cli.tokens import MemoryTokenStore, Tokens, TokenStore

DEFAULT_TIMEOUT_S = 30.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# Wait mode (API.md, "Events"): `Prefer: wait=N` holds a status answer until the execution is final or N s passed.
MAX_WAIT_S = 25
DEFAULT_WAIT_WINDOW_S = 20
WEBHOOK_TOLERANCE_S = 300  # signatures older or newer than this are refused (replays)
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "text/plain": ".txt"}

Json = dict[str, Any]
ProgressCallback = Callable[[Json], None]


class StagehubClientError(Exception):
    """Base of the client's errors."""


class ApiError(StagehubClientError):
    """A non-2xx answer: API.md's `{"code", "message", "details"?}` with the HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            message = body.get("message")
            details = body.get("details")
            return cls(
                response.status_code,
                body["code"],
                message if isinstance(message, str) else response.reason_phrase,
                details if isinstance(details, list) else None,
            )
        # Not API.md's body (a proxy's HTML page, say): keep the status and a short excerpt.
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return cls(response.status_code, f"HTTP_{response.status_code}", text)


class ApiUnreachable(StagehubClientError):
    """The server could not be reached (or kept failing at the transport level) after the retries."""


class WebhookVerificationError(StagehubClientError):
    """A webhook delivery whose Standard Webhooks signature does not hold (or is too old, or malformed)."""


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = WEBHOOK_TOLERANCE_S,
    now: float | None = None,
) -> Json:
    """The event of a webhook delivery once its signature checks out (the Standard Webhooks scheme).

    `secret` is `GET /users/me/webhook-secret`'s `whsec_…`; `headers` the request's (any case); `body` its raw
    bytes, exactly as received. Raises WebhookVerificationError otherwise. Receivers should also drop a
    `webhook-id` they have already handled: deliveries are at least once.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    message_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and timestamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(timestamp)
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error) as error:
        raise WebhookVerificationError("malformed timestamp or secret") from error
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        raise WebhookVerificationError("the signature's timestamp is too old or too new")
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(key, f"{message_id}.{sent_at}.".encode() + raw, hashlib.sha256).digest()
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            event = jsonlib.loads(raw)
            if not isinstance(event, dict):
                raise WebhookVerificationError("the body is not a JSON object")
            return event
    raise WebhookVerificationError("no signature matches")


class StagehubClient:
    """The stagehub API from Python. Thread-safe: several threads may share one client.

    `transport` (an httpx transport, e.g. `httpx.MockTransport`) and `sleep` exist for tests.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        token_store: TokenStore | None = None,
        *,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_store: TokenStore = token_store if token_store is not None else MemoryTokenStore()
        stored = self.token_store.load() if access_token is None else None
        self.access_token = access_token if access_token is not None else (stored.access_token if stored else None)
        self.refresh_token = refresh_token if refresh_token is not None or stored is None else stored.refresh_token
        self.email = stored.email if stored else None
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._refresh_lock = threading.Lock()
        self._timeout_s = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StagehubClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- auth -------------------------------------------------------------------------------------------

    def health(self) -> Json:
        return self._call("GET", "/health", auth=False)

    def register(self, email: str, password: str, display_name: str | None = None) -> Json:
        body: Json = {"email": email, "password": password}
        if display_name is not None:
            body["displayName"] = display_name
        return self._call("POST", "/auth/register", json=body, auth=False)

    def login(self, email: str, password: str) -> Json:
        pair = self._call("POST", "/auth/login", json={"email": email, "password": password}, auth=False)
        self.email = email.strip().lower()
        self._keep_pair(pair)
        return pair

    def refresh(self) -> Json:
        """Trade the held refresh token for a new pair (single use: the old one stops working)."""
        if not self.refresh_token:
            raise ApiError(401, "UNAUTHORIZED", "no refresh token held: log in again")
        pair = self._call("POST", "/auth/refresh", json={"refreshToken": self.refresh_token}, auth=False)
        self._keep_pair(pair)
        return pair

    def logout(self) -> None:
        """Revoke the held refresh token's family on the server and forget the pair locally."""
        if self.refresh_token:
            self._call("POST", "/auth/logout", json={"refreshToken": self.refresh_token}, auth=False, retry=True)
        self.access_token = self.refresh_token = None
        self.token_store.clear()

    def me(self) -> Json:
        return self._call("GET", "/users/me")

    def _keep_pair(self, pair: Json) -> None:
        self.access_token = pair["accessToken"]
        self.refresh_token = pair.get("refreshToken")
        self.token_store.save(Tokens(self.access_token, self.refresh_token, self.email))

    # ---- pipelines --------------------------------------------------------------------------------------

    def stage_types(self) -> list[Json]:
        return list(self._call("GET", "/stage-types")["items"])

    def create_pipeline(self, name: str, stages: list[Json], description: str = "") -> Json:
        return self._call("POST", "/pipelines", json={"name": name, "description": description, "stages": stages})

    def list_pipelines(self, limit: int | None = None, cursor: str | None = None) -> Json:
        """One page: `{"items": [...], "nextCursor": str | None}`."""
        return self._call("GET", "/pipelines", params=_page_params(limit, cursor))

    def iter_pipelines(self, page_size: int | None = None) -> Iterator[Json]:
        """Every pipeline, newest first, following `nextCursor` page by page."""
        return self._iterate(lambda cursor: self.list_pipelines(page_size, cursor))

    def user_pipelines(self, user_id: str = "me", limit: int | None = None, cursor: str | None = None) -> Json:
        return self._call("GET", f"/users/{_segment(user_id)}/pipelines", params=_page_params(limit, cursor))

    def get_pipeline(self, pipeline_id: str) -> Json:
        return self._call("GET", f"/pipelines/{_segment(pipeline_id)}")

    def delete_pipeline(self, pipeline_id: str) -> None:
        self._call("DELETE", f"/pipelines/{_segment(pipeline_id)}")

    def get_rating(self, pipeline_id: str) -> Json:
        return self._call("GET", f"/pipelines/{_segment(pipeline_id)}/rating")

    def rate(self, pipeline_id: str, score: int) -> Json:
        return self._call("PUT", f"/pipelines/{_segment(pipeline_id)}/rating", json={"score": score})

    # ---- uploads ----------------------------------------------------------------------------------------

    def create_upload(self, content_type: str, size_bytes: int) -> Json:
        return self._call("POST", "/uploads", json={"contentType": content_type, "sizeBytes": size_bytes})

    def upload_file(self, path: Path | str, content_type: str | None = None) -> str:
        """Upload a prompt text or an image through a presigned PUT; returns its `s3://` URI for pipelines."""
        path = Path(path)
        data = path.read_bytes()
        content_type = content_type or guess_content_type(path)
        upload = self.create_upload(content_type, len(data))
        # The presigned URL signs the content type; it must not carry our bearer token.
        self._send("PUT", upload["uploadUrl"], content=data, headers={"Content-Type": content_type}, retry=True)
        return str(upload["uri"])

    # ---- executions -------------------------------------------------------------------------------------

    def run(
        self,
        pipeline_id: str,
        variables: Mapping[str, str] | None = None,
        backend: str | None = None,
        parameters: Mapping[int | str, Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
        webhook: str | None = None,
        webhook_events: list[str] | None = None,
    ) -> Json:
        """Submit an execution (202, QUEUED). A fresh Idempotency-Key is sent unless one is given, so the
        submission is safe to retry: a replay answers the same execution instead of creating a second one."""
        body: Json = {}
        if variables:
            body["variables"] = dict(variables)
        if backend:
            body["backend"] = backend
        if parameters:
            body["parameters"] = {str(index): dict(values) for index, values in parameters.items()}
        if webhook:
            body["webhook"] = webhook
        if webhook_events:
            body["webhookEvents"] = list(webhook_events)
        headers = {IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
        return self._call("POST", f"/pipelines/{_segment(pipeline_id)}/executions", json=body, headers=headers)

    def get_execution(self, execution_id: str, wait_s: int | None = None) -> Json:
        """The execution; with `wait_s` (1-25) the server holds the answer until it is final or that long."""
        return self._execution_window(execution_id, wait_s)[0]

    def _execution_window(self, execution_id: str, wait_s: int | None) -> tuple[Json, bool]:
        """The execution, and whether the server applied `Prefer: wait` (False: it answered at once)."""
        path = f"/executions/{_segment(execution_id)}"
        if wait_s is None:
            return self._call("GET", path), False
        wait_s = max(1, min(MAX_WAIT_S, int(wait_s)))
        response = self._exchange(
            "GET", path, headers={"Prefer": f"wait={wait_s}"}, timeout=max(self._timeout_s, wait_s + 15.0)
        )
        applied = "wait=" in response.headers.get("Preference-Applied", "").replace(" ", "")
        return response.json(), applied

    def backends(self) -> list[Json] | None:
        """`GET /backends`' items (queue depth, workers, estimated wait), or None where the server has no such
        endpoint (404)."""
        try:
            return list(self._call("GET", "/backends")["items"])
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def webhook_secret(self, rotate: bool = False) -> str:
        """The caller's webhook signing secret (`whsec_…`); `rotate` replaces it first."""
        return str(self._call("POST" if rotate else "GET", "/users/me/webhook-secret", retry=True)["secret"])

    def webhook_deliveries(self, execution_id: str, limit: int | None = None, cursor: str | None = None) -> Json:
        path = f"/executions/{_segment(execution_id)}/webhook-deliveries"
        return self._call("GET", path, params=_page_params(limit, cursor))

    def list_executions(self, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> Json:
        params = _page_params(limit, cursor)
        if status:
            params["status"] = status
        return self._call("GET", "/executions", params=params)

    def iter_executions(self, status: str | None = None, page_size: int | None = None) -> Iterator[Json]:
        return self._iterate(lambda cursor: self.list_executions(status, page_size, cursor))

    def pipeline_executions(self, pipeline_id: str, limit: int | None = None, cursor: str | None = None) -> Json:
        path = f"/pipelines/{_segment(pipeline_id)}/executions"
        return self._call("GET", path, params=_page_params(limit, cursor))

    def iter_pipeline_executions(self, pipeline_id: str, page_size: int | None = None) -> Iterator[Json]:
        return self._iterate(lambda cursor: self.pipeline_executions(pipeline_id, page_size, cursor))

    def cancel(self, execution_id: str) -> Json:
        # Not retried: a replay of a cancel that went through would answer 409 (already final).
        return self._call("POST", f"/executions/{_segment(execution_id)}/cancel")

    def delete_execution(self, execution_id: str) -> None:
        self._call("DELETE", f"/executions/{_segment(execution_id)}")

    def result(self, execution_id: str) -> Json:
        """`{"executionId", "outputs": [...], "expiresIn"}` of a SUCCEEDED execution (409 otherwise)."""
        return self._call("GET", f"/executions/{_segment(execution_id)}/result")

    def download_results(self, execution_id: str, out_dir: Path | str) -> list[Path]:
        """Write every output to `out_dir` (images from their presigned URLs, texts inline) and return the paths.

        Files are named `stage<stage>-<index>.<ext>`, so several executions need several directories.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for output in self.result(execution_id)["outputs"]:
            target = out / output_filename(output)
            if output.get("url"):
                target.write_bytes(self._send("GET", output["url"], retry=True).content)
            else:
                target.write_text(output.get("text") or "", encoding="utf-8")
            written.append(target)
        return written

    def wait(
        self,
        execution_id: str,
        on_progress: ProgressCallback | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        wait_window: int | None = DEFAULT_WAIT_WINDOW_S,
    ) -> Json:
        """Wait until the execution is final and return it; `on_progress` gets the execution at every answer.

        Each request asks the server to hold its answer for up to `wait_window` seconds (`Prefer: wait=N`), so
        there is one request per window, and an answer comes as soon as the execution ends. A server that
        ignores the header (no `Preference-Applied`) answers at once: then this polls every `poll_interval`.
        `wait_window=None` always polls. Raises TimeoutError after `timeout` seconds (the execution keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            window = wait_window
            if window is not None and deadline is not None:
                window = min(window, int(deadline - time.monotonic()))
            execution, waited = self._execution_window(execution_id, window if window and window >= 1 else None)
            if on_progress is not None:
                on_progress(execution)
            if execution["status"] in FINAL_STATUSES:
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {execution_id} still {execution['status']} after {timeout} s")
            if not waited:
                self._sleep(poll_interval)

    # ---- transport --------------------------------------------------------------------------------------

    def _iterate(self, fetch: Callable[[str | None], Json]) -> Iterator[Json]:
        cursor: str | None = None
        while True:
            page = fetch(cursor)
            yield from page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        retry: bool | None = None,
    ) -> Any:
        """One API call: JSON body out, decoded JSON (or None for 204) back; 401 refreshes once."""
        response = self._exchange(method, path, json=json, params=params, headers=headers, auth=auth, retry=retry)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        retry: bool | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One API call's 2xx response (its headers too); any other status raises ApiError."""
        all_headers = dict(headers or {})
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if retry is None:
            retry = method in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in all_headers
        token = self.access_token if auth else None
        send = dict(json=json, params=params, headers=all_headers, retry=retry, **extra)
        response = self._send(method, path, token=token, **send)
        if response.status_code == 401 and auth and self._renew_after_rejected(token):
            token = self.access_token
            response = self._send(method, path, token=token, **send)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _renew_after_rejected(self, rejected: str | None) -> bool:
        """After a 401 with `rejected`: whether a newer access token is now held (refreshing if needed).

        Refresh tokens are single-use and reuse revokes the whole family, so concurrent 401s must not each
        refresh: under the lock, a thread that finds the token already changed just replays with it.
        """
        with self._refresh_lock:
            if self.access_token and self.access_token != rejected:
                return True
            if not self.refresh_token:
                return False
            try:
                self.refresh()
            except ApiError as error:
                if error.status in (400, 401, 403):
                    return False  # the caller re-raises the original 401
                raise
            return True

    def _send(
        self,
        method: str,
        url: str,
        *,
        retry: bool,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        attempt = 0
        while True:
            try:
                response = self._http.request(method, url, headers=all_headers, **kwargs)
            except httpx.TransportError as error:
                # A refused connection never reached the server: repeating it is safe for any method.
                if attempt >= self.max_retries or not (retry or isinstance(error, httpx.ConnectError)):
                    raise ApiUnreachable(f"{method} {_shown(url, self.base_url)}: {error}") from error
            else:
                if not (retry and response.status_code in RETRY_STATUSES and attempt < self.max_retries):
                    return response
                retry_after = _retry_after_s(response)
                response.close()
                self._sleep(retry_after if retry_after is not None else self._backoff(attempt))
                attempt += 1
                continue
            self._sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter in its upper half (spreads out clients retrying together)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _page_params(limit: int | None, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    return params


def _segment(value: str) -> str:
    """A path segment: ids are UUIDs, but never let a '/' or '?' in user input change the route."""
    return quote(str(value), safe="")


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except ValueError:
        return None


def _shown(url: str, base_url: str) -> str:
    """A URL for an error message: API paths with the server; presigned URLs without their signature."""
    return f"{base_url}{url}" if url.startswith("/") else url.split("?", 1)[0]


def guess_content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def output_filename(output: Mapping[str, Any]) -> str:
    content_type = str(output.get("contentType") or "")
    extension = EXTENSIONS.get(content_type) or (".txt" if output.get("type") == "text" else ".bin")
    return f"stage{int(output['stage'])}-{int(output.get('index', 0))}{extension}"
