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


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:a9fe:a9fe::", "cloud metadata"),  # 6to4 of 169.254.169.254
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:5601:5601", "cloud metadata"),  # Teredo client
        ("2001:0:a9fe:a9fe::1", "cloud metadata"),  # Teredo server
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("::ffff:169.254.169.254", "cloud metadata"),  # IPv4-mapped
    ],
)
def test_ipv4_carried_in_ipv6_is_judged_by_the_ipv4(address: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        OutboundPolicy().check_url("http://example.test/", resolver=fixed(address))
    assert reason in info.value.message and info.value.code == "url_not_allowed"
    # Allowing private and loopback addresses never lets the metadata service through.
    lenient = OutboundPolicy(allow_private=True, allow_loopback=True)
    if reason == "cloud metadata":
        with pytest.raises(InvalidRequest):
            lenient.check_url("http://example.test/", resolver=fixed(address))
    else:
        lenient.check_url("http://example.test/", resolver=fixed(address))


def test_ipv6_carrying_a_public_ipv4_is_allowed() -> None:
    for address in ("2002:808:808::1", "64:ff9b::808:808"):
        OutboundPolicy().check_url("http://example.test/", resolver=fixed(address))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/", "http://[::1/", "http://[zz::1]/", "http://" + "é" * 70 + ".com/"],
)
def test_malformed_urls_are_a_400_naming_the_param(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        OutboundPolicy().check_url(url, param="tools[0].server_url")
    assert (info.value.code, info.value.param) == ("invalid_url", "tools[0].server_url")
