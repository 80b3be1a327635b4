"""Where deliveries may go: public addresses over https, unless the operator allows more.

``CALLTRACK_HOOKS_ALLOW_HOSTS`` names hosts (names, addresses or networks) that may be
reached over plain http and may resolve to private addresses. Everything else must be https
and resolve to global addresses only. The check runs when an endpoint is added and again on
every connection, against the address actually connected to (a name that resolves to a
private address later, DNS rebinding, is refused then).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore2

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedTarget(ValueError):
    """An endpoint URL or address deliveries may not go to; the message says why."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts allowed beyond the public internet (``CALLTRACK_HOOKS_ALLOW_HOSTS``)."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        names: set[str] = set()
        networks: list[Network] = []
        for part in (item.strip() for item in text.split(",")):
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part.strip("[]"), strict=False))
            except ValueError:
                names.add(part.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".").strip("[]")
        if host in self.names:
            return True
        try:
            return self.allows_address(ipaddress.ip_address(host))
        except ValueError:
            return False

    def allows_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def refused_address(address: Address) -> bool:
    """Loopback, private, link-local (cloud metadata), shared, reserved: not the internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def check_url(url: str, allow: AllowList) -> str:
    """``url`` if deliveries may go there; RefusedTarget naming the problem otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"not a URL: {exc}") from None
    host = parts.hostname or ""
    if parts.scheme not in {"http", "https"} or not host:
        raise RefusedTarget("expected an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("credentials in the URL are not supported (they would be logged)")
    if parts.fragment:
        raise RefusedTarget("a URL fragment is never sent; remove it")
    if parts.scheme == "http" and not allow.allows_host(host):
        raise RefusedTarget(
            f"plain http is allowed only for hosts named in CALLTRACK_HOOKS_ALLOW_HOSTS "
            f"({host} is not); use https"
        )
    try:
        found = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedTarget(f"cannot resolve {host}: {exc}") from None
    for address in {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}:
        if refused_address(address) and not (
            allow.allows_host(host) or allow.allows_address(address)
        ):
            raise RefusedTarget(
                f"{host} resolves to {address}, a private or reserved address; allow it in "
                "CALLTRACK_HOOKS_ALLOW_HOSTS if deliveries should go there"
            )
    return url


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Connects only to addresses a delivery may reach, resolving each name itself and
    connecting to the address it checked (so a second lookup cannot swap it)."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        address = await self._checked_address(host, port)
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("deliveries never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _checked_address(self, host: str, port: int) -> str:
        host_allowed = self._allow.allows_host(host)
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from None
        for info in found:
            text = str(info[4][0])
            address = ipaddress.ip_address(text.split("%")[0])
            if host_allowed or self._allow.allows_address(address) or not refused_address(address):
                return text
        raise httpcore2.ConnectError(
            f"{host} resolves only to private or reserved addresses; refused"
        )
