"""Which hosts are this machine: localhost, 127.0.0.0/8 and ::1 (stdlib only).

Plain http and proxy-free connections are allowed only to these (config checks URLs with it, the
HTTP edge decides proxies with it), so both ask this one function.
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (``[::1]`` too)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
