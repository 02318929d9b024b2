"""One HTTP POST of a webhook event to the address the SSRF guard checked.

The connection goes to the checked IP itself (TLS still verifies the certificate of the URL's host, sent as
SNI), never follows a redirect, never uses a proxy, stops at the deadline and reads at most a small part of
the answer.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from functions.webhooks.address import WebhookTarget

ANSWER_CAP_BYTES = 4096
USER_AGENT = "stagehub-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status, or why none came."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: WebhookTarget, ip: str, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: WebhookTarget, ip: str, timeout_s: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s, context=context)
        self._ip = ip
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def post(
    target: WebhookTarget,
    ip: str,
    headers: dict[str, str],
    body: bytes,
    *,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST `body` to `target` at `ip`; the whole attempt takes at most about `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(target, ip, timeout_s, tls or ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(target, ip, timeout_s)
    request_headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    try:
        connection.request("POST", target.path, body=body, headers=request_headers)
        if connection.sock is not None:
            connection.sock.settimeout(max(0.1, deadline - time.monotonic()))
        response = connection.getresponse()
        if connection.sock is not None:
            connection.sock.settimeout(max(0.1, deadline - time.monotonic()))
        response.read(ANSWER_CAP_BYTES)  # drained a little for a clean close; never more
        status = response.status
    except TimeoutError:
        return Answer(None, f"no answer within {timeout_s:g} s")
    except ssl.SSLError as exc:
        return Answer(None, f"TLS failed: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, f"connection failed: {type(exc).__name__}")
    finally:
        connection.close()
    if 300 <= status < 400:
        return Answer(status, "redirects are not followed")
    return Answer(status, None if 200 <= status < 300 else f"the receiver answered {status}")
