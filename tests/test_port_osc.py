"""Portability of the OSC server's socket set-up."""

from __future__ import annotations

import logging
import socket
import sys
import time

from dreamcam.control.osc import server as osc
from dreamcam.control.osc.dispatch import build_message
from dreamcam.knobs import ParamStore


def _warning_for(monkeypatch, caplog, platform: str) -> str:
    # a receive buffer below what a burst needs (forced here: as root this Linux grants 16 MiB)
    monkeypatch.setattr(osc, "RCVBUF_ENOUGH", 1 << 40)
    monkeypatch.setattr(sys, "platform", platform)
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.osc.server"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        osc._grow_rcvbuf(s, osc.RCVBUF_BYTES)
    return " ".join(r.getMessage() for r in caplog.records)


def test_small_receive_buffer_on_macos_names_the_macos_setting(monkeypatch, caplog):
    msg = _warning_for(monkeypatch, caplog, "darwin")
    assert "sudo sysctl -w kern.ipc.maxsockbuf=33554432" in msg
    assert "rmem_max" not in msg


def test_small_receive_buffer_on_linux_names_rmem_max(monkeypatch, caplog):
    assert "sudo sysctl -w net.core.rmem_max=16777216" in _warning_for(monkeypatch, caplog, "linux")


def test_osc_host_localhost_listens_on_ipv4_where_the_resolver_prefers_ipv6(monkeypatch):
    # Windows' and macOS's resolvers give ::1 first for "localhost" (this Linux gives 127.0.0.1):
    # stood in for by a resolver that answers "localhost" that way; the server and the sender are real
    real = socket.getaddrinfo

    def resolver(host, *args, **kw):
        if host == "localhost":
            return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", args[0], 0, 0))] + real("127.0.0.1", *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    store = ParamStore()
    with osc.OscServer(store, host="localhost", port=0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(build_message("/dreamcam/strength", 0.25), ("127.0.0.1", server.port))
        deadline = time.monotonic() + 2.0
        while store.get("strength") != 0.25 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert store.get("strength") == 0.25
