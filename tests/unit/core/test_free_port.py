"""free_port: a port nothing is bound to, outside the range the kernel gives outgoing
connections."""

from __future__ import annotations

import socket
from pathlib import Path

from actors.core.runtime import free_port


def _ephemeral() -> range:
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_the_port_is_outside_the_ephemeral_range_and_can_be_listened_on() -> None:
    ports = [free_port() for _ in range(20)]

    assert all(port not in _ephemeral() for port in ports), ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[0]))
        sock.listen()


def test_a_port_in_use_is_never_given() -> None:
    taken = []
    try:
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = free_port()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            taken.append(sock)
        ports = {sock.getsockname()[1] for sock in taken}
        assert all(free_port() not in ports for _ in range(50))
    finally:
        for sock in taken:
            sock.close()
