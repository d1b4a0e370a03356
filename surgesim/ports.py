"""Free TCP ports for the processes surgesim starts (emulators, services, fronts, fakes).

Asking the kernel for port 0 hands out a port from its *ephemeral* range, the same range
every outgoing connection takes its local port from. A live run opens thousands of
connections while it starts a dozen servers, so a port chosen that way can be taken by a
client socket before the server binds it ("address already in use"; seen in CI). Ports
are therefore chosen at random below the ephemeral range, checked by binding, and never
handed out twice by one process."""

from __future__ import annotations

import random
import socket

LOW = 20000
"""Lowest port handed out (well above the usual service ports)."""
_handed: set[int] = set()
_rng = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS starts at 49152


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, outside the ephemeral range when there is room."""
    high = _ephemeral_low() - 1
    if high - LOW >= 1000:
        for _ in range(200):
            port = _rng.randint(LOW, high)
            if port not in _handed and _bindable(host, port):
                _handed.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room: let the kernel pick
        s.bind((host, 0))
        port = s.getsockname()[1]
    _handed.add(port)
    return port
