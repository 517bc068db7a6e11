"""Portability of the OBS script's UDP link (OBS's embedded Python on Windows).

Winsock's recvfrom on a UDP socket that has sent nothing yet (so is unbound) fails with
WSAEINVAL, which Python raises as OSError(errno EINVAL, winerror 10022); Linux says "nothing
there" instead. poll() reads before it sends, so on Windows its first read after a host name
was looked up met that error. Winsock cannot exist here: the link's socket is a real one whose
recvfrom answers as Winsock does until the socket has sent.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
from obs_harness import OscPeer, wait_until  # noqa: E402

_REAL_SOCKET = socket.socket


class _WinsockUdp:
    """A real UDP socket whose recvfrom fails like Winsock's until it has sent."""

    def __init__(self, family):
        self._sock = _REAL_SOCKET(family, socket.SOCK_DGRAM)
        self._sent = False

    def sendto(self, data, addr):
        self._sent = True
        return self._sock.sendto(data, addr)

    def recvfrom(self, n):
        if not self._sent:
            raise OSError(errno.EINVAL, "An invalid argument was supplied")
        return self._sock.recvfrom(n)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_first_poll_before_anything_was_sent_is_quiet_and_connects(monkeypatch):
    logged = []
    with OscPeer(state={"presets": [], "fps": 20.0, "latency_ms": 30.0}) as peer:
        link = dl.DreamcamLink("127.0.0.1", peer.port, log=lambda level, msg: logged.append((level, msg)))
        monkeypatch.setattr(dl.socket, "socket", lambda family, kind: _WinsockUdp(family))
        with link:
            link._close_socket()  # as after a name look-up: the next poll makes the socket and reads first
            wait_until(lambda: link.poll().startswith("connected"), what="a /dreamcam/state reply")
    assert not [msg for level, msg in logged if level >= logging.WARNING], logged
