"""A webhook receiver on loopback for tests: answers from a script and verifies every delivery with the
Standard Webhooks reference library (`standardwebhooks`), not with our own signing code."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any = None  # the payload the reference library verified; None when verification failed
    error: str | None = None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(json.loads(self.body)["type"])


@dataclass
class Receiver:
    """Answers each POST with the next status of `script` (then `default`); keeps what it got."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    secret: str | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        item = Received(headers, body)
        if self.secret is not None:
            try:
                item.verified = Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                item.error = str(exc)
        with self._lock:
            self.received.append(item)
            return self.script.pop(0) if self.script else self.default


@contextmanager
def running_receiver(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stagehub"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
