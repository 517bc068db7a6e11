"""The UDP sink's socket is bound to the interface that reaches the destination, not to
0.0.0.0 (all of them): read back from the kernel's socket table on a real loopback stream."""

from __future__ import annotations

import os
import socket
import sys
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.frames import Frame  # noqa: E402
from dreamcam.sinks import open_sink  # noqa: E402
from dreamcam.sinks.udp import local_address  # noqa: E402


def _own_udp_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (local address, port) of this process's IPv4 UDP sockets (Linux /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    found = {}
    with open("/proc/self/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if inode in inodes:
                hex_ip, hex_port = fields[1].split(":")
                found[inode] = (socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1]), int(hex_port, 16))
    return found


def test_local_address_is_the_route_to_the_destination():
    assert local_address("127.0.0.1", 5000) == "127.0.0.1"
    assert local_address("::1", 5000) == "::1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the socket table from Linux /proc")
def test_the_stream_to_127_0_0_1_is_sent_from_127_0_0_1():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    before = _own_udp_sockets()
    with open_sink(f"udp://127.0.0.1:{rx.getsockname()[1]}", width=64, height=48, fps=30) as sink:
        opened = {inode: where for inode, where in _own_udp_sockets().items() if inode not in before}
        sink.write(Frame(np.full((48, 64, 3), 128, np.uint8), time.perf_counter(), 0))
        _, sender = rx.recvfrom(65536)
    rx.close()
    assert sink.error is None and sink.local_address == "127.0.0.1"
    assert len(opened) == 1, opened  # the stream's own socket
    (bound, port), = opened.values()
    assert bound == "127.0.0.1" and port > 0  # not 0.0.0.0
    assert sender == (bound, port)
