"""What counts as a loopback host: one rule for ``serve``'s token and Host checks and the serve
unit's network sandbox (``systemd render``)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def host_is_loopback(host: str) -> bool:
    """True for a loopback name or address (a bind address or a request's host, without port).
    ``serve``'s token rule and Host allow-list and the serve unit's network sandbox all use it."""
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere: treat it as exposed
