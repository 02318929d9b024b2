"""The SSRF guard of webhooks: which addresses a webhook may name, and the one IP a delivery connects to.

A webhook must be `https` (the local stack may allow `http` to loopback) and every address its host resolves to
must be public: loopback, private, link-local, multicast, reserved, shared (CGNAT) and cloud-metadata addresses
are refused, also when hidden in an IPv4-mapped, IPv4-compatible, 6to4, Teredo or NAT64 IPv6 address or written
as a number (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`). It is checked at submission and again at each
delivery, which then connects to the checked IP itself (no second lookup an attacker's DNS could answer
differently).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import ValidationFailed

WEBHOOK_MAX_BYTES = 2048

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (strings, as getaddrinfo gives them)
Resolver = Callable[[str, int], list[str]]

# Cloud instance-metadata services (most are link-local or private anyway; named so that none slips through).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What inet_aton reads as an IPv4 address: one to four parts, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


class UnsafeWebhook(ValidationFailed):
    """The webhook names an address the service must not call (or none at all)."""


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL taken apart: what a delivery sends its request to."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to through the system's resolver."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhook(f"the webhook's host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


def parse_webhook(url: str, *, allow_loopback_http: bool = False) -> WebhookTarget:
    """The target of a webhook URL, or UnsafeWebhook for anything but an absolute https URL with a host."""
    if len(url.encode()) > WEBHOOK_MAX_BYTES:
        raise UnsafeWebhook(f"webhook: at most {WEBHOOK_MAX_BYTES} bytes")
    if _CONTROL_OR_SPACE.search(url):
        raise UnsafeWebhook("webhook: no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhook(f"webhook: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    allowed = {"https", "http"} if allow_loopback_http else {"https"}
    if scheme not in allowed:
        raise UnsafeWebhook("webhook: must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhook("webhook: credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeWebhook("webhook: the URL has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(scheme, host, port or (443 if scheme == "https" else 80), path)


def literal_address(host: str) -> IpAddress | None:
    """The address a host names by itself (any IPv6 form, dotted quad or inet_aton's numeric forms), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError as exc:
            raise UnsafeWebhook(f"webhook: {host!r} is not a valid address") from exc
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo's client, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or int(address) >> 32 == 0:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IpAddress, *, allow_loopback: bool = False) -> str | None:
    """Why a delivery must not connect to `address`; None when it is a public unicast address."""
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
        reason = refusal(inner, allow_loopback=allow_loopback)
        if reason is not None:
            return f"{reason} (inside {address})"
        if int(address) >> 32 == 0:
            return "a reserved address"  # IPv4-compatible (deprecated) and ::/96
        return None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a private address"
    return None


def check_webhook(url: str, resolver: Resolver, *, allow_loopback_http: bool = False) -> tuple[WebhookTarget, str]:
    """The target and the one checked IP to connect to; UnsafeWebhook if any address the host has is refused."""
    target = parse_webhook(url, allow_loopback_http=allow_loopback_http)
    literal = literal_address(target.host)
    names = [str(literal)] if literal is not None else resolver(target.host, target.port)
    addresses: list[IpAddress] = []
    for name in names:
        try:
            addresses.append(ipaddress.ip_address(name.split("%", 1)[0]))
        except ValueError as exc:
            raise UnsafeWebhook(f"webhook: the host resolved to {name!r}, not an address") from exc
    if not addresses:
        raise UnsafeWebhook(f"webhook: the host {target.host!r} has no address")
    for address in addresses:
        reason = refusal(address, allow_loopback=allow_loopback_http)
        if reason is not None:
            raise UnsafeWebhook(f"webhook: {target.host!r} resolves to {reason}, which is not allowed")
    if target.scheme == "http" and not all(a.is_loopback for a in addresses):
        raise UnsafeWebhook("webhook: must be an https:// URL (plain http only to loopback, locally)")
    return target, str(addresses[0])
