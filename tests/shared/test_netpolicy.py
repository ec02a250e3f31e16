"""The outbound-address policy, with a stand-in resolver (no DNS in unit tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.errors import InvalidRequest
from shared.netpolicy import OutboundPolicy


def fixed(*addresses: str) -> Callable[[str, int], list[str]]:
    return lambda _host, _port: list(addresses)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("fc00::5", "private"),
        ("0.0.0.0", "routable"),
        ("224.0.0.1", "routable"),
    ],
)
def test_default_policy_refuses(address: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        OutboundPolicy().check_url("https://hooks.example.com/x", resolver=fixed(address))
    assert info.value.code == "url_not_allowed" and info.value.param == "url"
    assert reason in info.value.message and address in info.value.message


def test_public_addresses_pass() -> None:
    OutboundPolicy().check_url(
        "https://hooks.example.com/x", resolver=fixed("93.184.216.34", "2606:2800:220:1::1")
    )


def test_one_bad_address_among_good_ones_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        OutboundPolicy().check_url(
            "http://mixed.example.com", resolver=fixed("93.184.216.34", "10.0.0.1")
        )


def test_operator_can_allow_private_and_loopback_but_never_metadata() -> None:
    policy = OutboundPolicy(allow_private=True, allow_loopback=True)
    policy.check_url("http://127.0.0.1:9000/hook", resolver=fixed("127.0.0.1"))
    policy.check_url("http://10.0.0.5/hook", resolver=fixed("10.0.0.5"))
    for address in ("169.254.169.254", "169.254.1.1"):
        with pytest.raises(InvalidRequest):
            policy.check_url("http://x.example.com", resolver=fixed(address))
    with pytest.raises(InvalidRequest) as info:
        policy.check_url(
            "http://metadata.google.internal/computeMetadata/v1/", resolver=fixed("93.184.216.34")
        )
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http://", "x"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        OutboundPolicy().check_url(url, param="webhook.url", resolver=fixed("93.184.216.34"))
    assert (info.value.code, info.value.param) == ("invalid_url", "webhook.url")


def test_real_resolver_on_a_literal_loopback_address() -> None:
    OutboundPolicy(allow_loopback=True).check_url("http://127.0.0.1:1/")
    with pytest.raises(InvalidRequest):
        OutboundPolicy().check_url("http://127.0.0.1:1/")
