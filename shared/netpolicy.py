"""The outbound-address policy: which URLs resq may call on a user's behalf (webhook
receivers now, MCP servers later).

By default link-local and cloud-metadata addresses are always refused, and private ranges and
loopback only where the operator allows them (``RESQ_OUTBOUND_ALLOW_PRIVATE``,
``RESQ_OUTBOUND_ALLOW_LOOPBACK``). Every address a host name resolves to is checked, so a name
that points at a forbidden address is refused too. (The check runs again at connect time in
the caller, which closes most of the DNS-rebinding window.)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import InvalidRequest
from shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


# IPv6 ranges that carry an IPv4 address inside them; the IPv4 one is where packets end up.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped (``::ffff:a.b.c.d``), 6to4
    (``2002:AABB:CCDD::``), Teredo (``2001:0::/32``, its server and its client) and NAT64
    (``64:ff9b::a.b.c.d``)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found += list(address.teredo)
    if address in NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class OutboundPolicy:
    allow_private: bool = False
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            allow_private=settings.outbound_allow_private,
            allow_loopback=settings.outbound_allow_loopback,
        )

    def why_refused(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be called, or None. An IPv6 address that carries an IPv4
        one is judged by the address it carries (6to4 of 169.254.169.254 is the metadata
        service, whatever the IPv6 prefix looks like)."""
        inner = embedded_ipv4(address)
        if inner:
            for carried in inner:
                why = self._judge(carried)
                if why is not None:
                    return f"{why} (carried in {address})"
            return None
        return self._judge(address)

    def _judge(self, address: IPAddress) -> str | None:
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_loopback:
            return None if self.allow_loopback else "a loopback address"
        if address.is_unspecified or address.is_multicast or address.is_reserved:
            return "not a routable unicast address"
        if address.is_private:
            return None if self.allow_private else "a private address"
        return None

    def check_url(self, url: str, *, param: str = "url", resolver: Resolver = resolve) -> None:
        """Raise ``InvalidRequest`` unless ``url`` is http(s) and every address its host
        resolves to is allowed."""
        try:
            parts = urlsplit(url)
            hostname, explicit_port = parts.hostname, parts.port
        except ValueError as exc:  # a port out of range, a malformed IPv6 literal
            raise InvalidRequest(
                f"Invalid URL {url!r}: {exc}.", param=param, code="invalid_url"
            ) from None
        if parts.scheme not in {"http", "https"} or not hostname:
            raise InvalidRequest(
                f"Invalid URL {url!r}: expected an http:// or https:// URL with a host.",
                param=param,
                code="invalid_url",
            )
        host = hostname.lower().rstrip(".")
        if host in METADATA_HOSTS:
            raise InvalidRequest(
                f"The URL {url!r} points at a cloud metadata service.",
                param=param,
                code="url_not_allowed",
            )
        port = explicit_port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
            raise InvalidRequest(
                f"The host of {url!r} does not resolve: {exc}.", param=param, code="invalid_url"
            ) from None
        for raw in addresses:
            why = self.why_refused(ipaddress.ip_address(raw.split("%", 1)[0]))
            if why is not None:
                raise InvalidRequest(
                    f"The URL {url!r} resolves to {raw}, {why}, which this resq server does "
                    "not call (see RESQ_OUTBOUND_ALLOW_PRIVATE / RESQ_OUTBOUND_ALLOW_LOOPBACK).",
                    param=param,
                    code="url_not_allowed",
                )
