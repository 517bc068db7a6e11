"""Fixtures shared by the sink tests."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def receiver():
    """A loopback UDP socket with a 4 MiB buffer that a stream is sent to (0.3 s read timeout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    yield sock
    sock.close()
