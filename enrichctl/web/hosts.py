"""Which ``Host`` names ``serve`` answers: its defence against DNS rebinding.

A page on ``attacker.example`` can make its name resolve to 127.0.0.1 and then talk to a loopback
server as if it were the same origin; the one thing it cannot change is the ``Host`` header its
browser sends. So on a loopback address ``serve`` answers only requests that name it by a loopback
name or address (``localhost``, 127.0.0.0/8, ``::1``; any port) or by a name in
``serve.allowed_hosts``, for every method. On any other address it answers every name unless
``serve.allowed_hosts`` is set (the token guards the state changes there already); once it is set,
the same rule as on loopback applies.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from enrichctl.loopback import host_is_loopback

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_without_port(header: str) -> str:
    """``Host`` header -> its name or address, lower-case, without port, brackets or final dot."""
    header = header.strip().lower()
    if header.startswith("["):  # [v6]:port
        address, _, rest = header[1:].partition("]")
        return address if rest == "" or (rest[:1] == ":" and rest[1:].isdigit()) else header
    name, colon, port = header.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or port == ""):
        header = name
    return header.rstrip(".") if header != "." else header


def _address(name: str) -> _IP | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The names a server answers for; ``any_host`` when it answers every one."""

    names: frozenset[str]
    addresses: frozenset[_IP]
    any_host: bool

    @classmethod
    def for_bind(cls, bind_host: str, allowed_hosts: tuple[str, ...]) -> HostPolicy:
        entries = [host_without_port(h) for h in allowed_hosts]
        addresses = frozenset(a for e in entries if (a := _address(e)) is not None)
        names = frozenset(e for e in entries if _address(e) is None)
        return cls(names, addresses, any_host=not entries and not host_is_loopback(bind_host))

    def refusal(self, host_header: str | None) -> str | None:
        """Why a request naming ``host_header`` is not answered, or None when it is."""
        if self.any_host:
            return None
        if not host_header:
            return "a Host header naming this server is required"
        host = host_without_port(host_header)
        address = _address(host)
        if host in self.names or host_is_loopback(host) or (address is not None and address in self.addresses):
            return None
        return (f"this server does not answer for the host {host[:100]!r}; if that is really its "
                "name, add it to serve.allowed_hosts")
