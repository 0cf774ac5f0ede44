"""``free_port``: the ports the tests choose for their servers cannot be taken meanwhile by the
kernel's own choices (``bind(0)``, outgoing connections' source ports)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from polybus.common.infra import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="the ephemeral range is read from Linux's /proc")
def test_ports_are_bindable_distinct_and_below_the_kernels_ephemeral_range() -> None:
    low = int(RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", ports[-1]))
        server.listen()
        # The kernel's choices for bind(0) stay out of the range free_port uses.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind(("127.0.0.1", 0))
            assert other.getsockname()[1] >= low
