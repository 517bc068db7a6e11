"""Portability of the OSC server's socket set-up."""

from __future__ import annotations

import logging
import socket
import sys

from dreamcam import osc


def _warning_for(monkeypatch, caplog, platform: str) -> str:
    # a receive buffer below what a burst needs (forced here: as root this Linux grants 16 MiB)
    monkeypatch.setattr(osc, "RCVBUF_ENOUGH", 1 << 40)
    monkeypatch.setattr(sys, "platform", platform)
    with caplog.at_level(logging.WARNING, logger="dreamcam.osc"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        osc._grow_rcvbuf(s, osc.RCVBUF_BYTES)
    return " ".join(r.getMessage() for r in caplog.records)


def test_small_receive_buffer_on_macos_names_the_macos_setting(monkeypatch, caplog):
    msg = _warning_for(monkeypatch, caplog, "darwin")
    assert "sudo sysctl -w kern.ipc.maxsockbuf=33554432" in msg
    assert "rmem_max" not in msg


def test_small_receive_buffer_on_linux_names_rmem_max(monkeypatch, caplog):
    assert "sudo sysctl -w net.core.rmem_max=16777216" in _warning_for(monkeypatch, caplog, "linux")
