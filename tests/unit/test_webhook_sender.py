"""The webhook sender with in-memory collaborators: the retry schedule, long delays in 15-minute hops, and the
SSRF guard again at delivery for every forbidden form (the DNS answer changed after submission)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.webhooks import delivery, sender
from functions.webhooks.delivery import Answer
from functions.webhooks.dependencies import WebhookDeps
from functions.webhooks.events import WebhookMessage, parse_webhook_message
from functions.webhooks.store import Delivery
from shared.settings import Settings
from tests.unit.test_webhook_address import FORBIDDEN_LITERALS

NOW = 1_800_000_000.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class FakeStore:
    gone: set[str] = field(default_factory=set)
    log: list[Delivery] = field(default_factory=list)

    def is_gone(self, execution_id: str) -> bool:
        return execution_id in self.gone

    def mark_gone(self, execution_id: str) -> None:
        self.gone.add(execution_id)

    def signing_secrets(self, user_id: str, now: float) -> list[str]:
        return [SECRET]

    def log_delivery(self, record: Delivery) -> None:
        self.log.append(record)


@dataclass
class FakeQueues:
    sent: list[tuple[str, WebhookMessage, int]] = field(default_factory=list)

    def send(self, url: str, body: str) -> str:
        self.sent.append((url, parse_webhook_message(body), 0))
        return "id"

    def send_later(self, url: str, body: str, delay_s: int) -> str:
        self.sent.append((url, parse_webhook_message(body), delay_s))
        return "id"


def _deps(resolved: list[str], delays: list[int]) -> tuple[WebhookDeps, FakeStore, FakeQueues]:
    settings = Settings.model_validate(
        {
            **{name: name for name in Settings.model_fields if name.endswith(("_table", "_bucket"))},
            "webhook_queue_url": "queue",
            "webhook_dlq_url": "dlq",
            "webhook_retry_delays_s": delays,
        }
    )
    store, queues = FakeStore(), FakeQueues()
    deps = WebhookDeps(settings, store, None, queues, resolver=lambda host, port: resolved)  # type: ignore[arg-type]
    return deps, store, queues


def _message(**fields: Any) -> WebhookMessage:
    values: dict[str, Any] = {
        "webhookId": "msg_1",
        "executionId": "e1",
        "userId": "u1",
        "url": "https://hooks.example.com/in",
        "type": "execution.completed",
        "timestamp": "2026-12-01T00:00:00.000Z",
        "data": {"executionId": "e1", "status": "SUCCEEDED"},
    }
    return WebhookMessage.model_validate(values | fields)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str]]]:
    """Every POST the sender makes (the checked IP and the headers), answered 500."""
    made: list[tuple[str, dict[str, str]]] = []

    def post(target: Any, ip: str, headers: dict[str, str], body: bytes, **kwargs: Any) -> Answer:
        made.append((ip, headers))
        return Answer(500, "the receiver answered 500")

    monkeypatch.setattr(sender, "post", post)
    return made


def test_a_failure_is_retried_after_the_next_delay_of_the_schedule(answers: list[Any]) -> None:
    deps, store, queues = _deps(["93.184.216.34"], [5, 300])
    assert sender.send_event(_message(), deps, now=lambda: NOW) is sender.Outcome.RETRYING
    assert answers[0][0] == "93.184.216.34"
    assert answers[0][1]["webhook-id"] == "msg_1"
    assert answers[0][1]["webhook-timestamp"] == str(int(NOW))
    ((url, retry, delay),) = queues.sent
    assert (url, retry.attempt, retry.webhook_id, delay) == ("queue", 2, "msg_1", 5)
    assert [(d.attempt, d.status) for d in store.log] == [(1, 500)]


def test_a_delay_longer_than_sqs_allows_goes_in_fifteen_minute_hops(answers: list[Any]) -> None:
    deps, _, queues = _deps(["93.184.216.34"], [36000])
    sender.send_event(_message(), deps, now=lambda: NOW)
    (_, retry, delay) = queues.sent[-1]
    assert (delay, retry.not_before) == (900, NOW + 36000)
    # Received after the first hop: sent on with the rest of the delay, nothing attempted.
    assert sender.send_event(retry, deps, now=lambda: NOW + 900) is sender.Outcome.DEFERRED
    assert len(answers) == 1
    (_, again, delay) = queues.sent[-1]
    assert (delay, again.attempt) == (900, 2)
    # At its time: attempted, and as the schedule is used up, dead-lettered.
    assert sender.send_event(again, deps, now=lambda: NOW + 36000) is sender.Outcome.EXHAUSTED
    assert len(answers) == 2
    assert queues.sent[-1][0] == "dlq"


def test_the_default_schedule_retries_for_at_least_a_day() -> None:
    assert sum(Settings.model_fields["webhook_retry_delays_s"].get_default(call_default_factory=True)) >= 24 * 3600


def test_an_execution_that_answered_gone_is_not_attempted_again(answers: list[Any]) -> None:
    deps, store, queues = _deps(["93.184.216.34"], [0])
    store.gone.add("e1")
    assert sender.send_event(_message(), deps, now=lambda: NOW) is sender.Outcome.STOPPED
    assert (answers, store.log, queues.sent) == ([], [], [])


def _canonical(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# A resolver answers in canonical form; the numeric spellings are hosts, refused below as literals.
@pytest.mark.parametrize("rebound", [a.strip("[]") for a in FORBIDDEN_LITERALS if _canonical(a.strip("[]"))])
def test_a_name_now_resolving_to_a_forbidden_address_is_not_called(answers: list[Any], rebound: str) -> None:
    deps, store, _ = _deps([rebound], [0])
    assert sender.send_event(_message(), deps, now=lambda: NOW) is sender.Outcome.RETRYING
    assert answers == []
    assert store.log[0].status is None
    assert "not allowed" in str(store.log[0].error)


@pytest.mark.parametrize("host", FORBIDDEN_LITERALS)
def test_a_forbidden_literal_is_not_called_at_delivery(answers: list[Any], host: str) -> None:
    deps, store, _ = _deps(["93.184.216.34"], [0])
    sender.send_event(_message(url=f"https://{host}/in"), deps, now=lambda: NOW)
    assert answers == []
    assert store.log[0].error


def test_redirects_are_not_followed_and_answers_are_read_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302 if self.path == "/redirect" else 200)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            self.wfile.write(b"x" * (1024 * 1024))  # a huge answer: only the cap is read

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    read: list[int] = []
    real_read = delivery.http.client.HTTPResponse.read

    def counting_read(self: Any, amt: int | None = None) -> bytes:
        read.append(-1 if amt is None else amt)
        return real_read(self, amt)

    monkeypatch.setattr(delivery.http.client.HTTPResponse, "read", counting_read)
    try:
        from functions.webhooks.address import check_webhook

        for path, status in (("/redirect", 302), ("/ok", 200)):
            target, ip = check_webhook(f"http://127.0.0.1:{port}{path}", lambda h, p: [], allow_loopback_http=True)
            answer = delivery.post(target, ip, {}, b"{}", timeout_s=5)
            assert answer.status == status
        assert read == [delivery.ANSWER_CAP_BYTES, delivery.ANSWER_CAP_BYTES]
    finally:
        server.shutdown()
        server.server_close()


def _self_signed(host: str, directory: Any) -> tuple[str, str, str]:
    """A certificate for `host` and its key (PEM files), and the PEM text to trust."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file), pem


def test_https_connects_to_the_checked_ip_and_verifies_the_hosts_certificate(tmp_path: Any) -> None:
    """The URL's host is never resolved again: the connection goes to the pinned IP, with the host as SNI and
    Host header, and TLS still checks the certificate against that host."""
    import http.server
    import ssl
    import threading

    from functions.webhooks.address import WebhookTarget

    cert_file, key_file, pem = _self_signed("hooks.test", tmp_path)
    seen: list[str] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: sni.append(name)  # type: ignore[assignment,func-returns-value]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    trust = ssl.create_default_context(cadata=pem)
    try:
        answer = delivery.post(
            WebhookTarget("https", "hooks.test", port, "/in"), "127.0.0.1", {}, b"{}", timeout_s=5, tls=trust
        )
        assert answer == Answer(204, None)
        assert seen == [f"hooks.test:{port}"]
        assert sni == ["hooks.test"]
        wrong = delivery.post(
            WebhookTarget("https", "other.test", port, "/in"), "127.0.0.1", {}, b"{}", timeout_s=5, tls=trust
        )
        assert wrong.status is None
        assert "TLS failed" in str(wrong.error)
    finally:
        server.shutdown()
        server.server_close()
