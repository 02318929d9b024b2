"""The webhook SSRF guard: every form of a forbidden address is refused, public ones pass, only one IP is used."""

from __future__ import annotations

import pytest

from functions.webhooks.address import UnsafeWebhook, check_webhook, parse_webhook

PUBLIC_V4, PUBLIC_V6 = "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"

# Hosts that name a forbidden address by themselves, in every spelling the resolver would accept.
FORBIDDEN_LITERALS = [
    "127.0.0.1",
    "2130706433",  # 127.0.0.1 as one number
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",  # octal
    "127.1",
    "017700000001",
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::7f00:1]",  # NAT64
    "[2002:7f00:1::]",  # 6to4
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # shared (CGNAT)
    "169.254.169.254",  # cloud metadata
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "100.100.100.200",  # another cloud's metadata
    "[::ffff:169.254.169.254]",
    "169.254.1.1",
    "[fe80::1]",
    "224.0.0.1",  # multicast
    "[ff02::1]",
    "0.0.0.0",
    "[::]",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "[fc00::1]",  # unique local
]


def _never(host: str, port: int) -> list[str]:
    raise AssertionError(f"a literal address must not be resolved ({host})")


@pytest.mark.parametrize("host", FORBIDDEN_LITERALS)
def test_a_forbidden_literal_address_is_refused(host: str) -> None:
    with pytest.raises(UnsafeWebhook):
        check_webhook(f"https://{host}/hook", _never)


@pytest.mark.parametrize(
    "resolved", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00:ec2::254", "ff05::2"]
)
def test_a_name_that_resolves_to_a_forbidden_address_is_refused(resolved: str) -> None:
    with pytest.raises(UnsafeWebhook, match="resolves to"):
        check_webhook("https://hooks.example.com/x", lambda host, port: [resolved])


def test_one_forbidden_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(UnsafeWebhook):
        check_webhook("https://hooks.example.com/x", lambda host, port: [PUBLIC_V4, "127.0.0.1"])


def test_a_public_name_passes_and_the_checked_ip_is_the_one_to_connect_to() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC_V4, PUBLIC_V6]

    target, ip = check_webhook("https://Hooks.Example.com:8443/in?x=1", resolver)
    assert ip == PUBLIC_V4
    assert asked == [("hooks.example.com", 8443)]
    assert (target.scheme, target.port, target.path, target.host_header) == (
        "https",
        8443,
        "/in?x=1",
        "hooks.example.com:8443",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "ftp://hooks.example.com/x",
        "hooks.example.com/x",
        "https:///nohost",
        "https://user:pw@hooks.example.com/x",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com/a b",
        "https://hooks.example.com/\r\nHost: evil",
        "https://hooks.example.com/" + "a" * 2048,
        "file:///etc/passwd",
        "https://256.1.1.1/x",
    ],
)
def test_malformed_or_non_https_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhook):
        check_webhook(url, lambda host, port: [PUBLIC_V4])


def test_an_unresolvable_host_is_refused() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise UnsafeWebhook("does not resolve")

    with pytest.raises(UnsafeWebhook):
        check_webhook("https://nowhere.invalid/x", resolver)


def test_the_local_setting_allows_plain_http_to_loopback_only() -> None:
    target, ip = check_webhook("http://127.0.0.1:9000/in", _never, allow_loopback_http=True)
    assert (target.scheme, ip) == ("http", "127.0.0.1")
    with pytest.raises(UnsafeWebhook):
        check_webhook("http://10.0.0.1/in", _never, allow_loopback_http=True)
    with pytest.raises(UnsafeWebhook):
        check_webhook("http://hooks.example.com/in", lambda h, p: [PUBLIC_V4], allow_loopback_http=True)
    with pytest.raises(UnsafeWebhook):
        check_webhook("http://127.0.0.1:9000/in", _never)


def test_a_trailing_dot_does_not_hide_a_numeric_host() -> None:
    with pytest.raises(UnsafeWebhook):
        check_webhook("https://2130706433./x", _never)
    assert parse_webhook("https://example.com./x").host == "example.com"
