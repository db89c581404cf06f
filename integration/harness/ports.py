"""Loopback port allocation."""

import random
import socket
from pathlib import Path

# Ports for listeners that are bound later, by another process (Envoy), are drawn below the kernel's
# ephemeral range. A port taken from that range could be handed out again before Envoy binds it: once
# to Envoy's own admin listener (`127.0.0.1:0`), which then made the Envoy listener fail with "Address
# already in use".
LOWEST = 10_000
ATTEMPTS = 200


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range when it can be."""
    top = _ephemeral_start()
    if top > LOWEST + ATTEMPTS:
        for _ in range(ATTEMPTS):
            port = random.randrange(LOWEST, top)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
