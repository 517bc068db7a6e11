"""Portability of the OBS script's UDP link (OBS's embedded Python on Windows)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402


def test_link_socket_is_bound_before_its_first_read():
    # Winsock's recvfrom on a UDP socket not yet bound (nothing sent yet) fails with WSAEINVAL
    # (10022) where Linux says "nothing there"; poll() reads before it sends, so the socket must
    # be bound from the start, as the first sendto would bind it
    with dl.DreamcamLink("127.0.0.1", 9) as link:
        sock = link._socket()
        assert sock.getsockname()[1] != 0



def test_ipv6_link_socket_is_bound_too():
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        pytest.skip("no IPv6 stack on this machine")
    with dl.DreamcamLink("::1", 9) as link:
        assert link._socket().getsockname()[1] != 0
