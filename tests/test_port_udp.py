"""Portability of the UDP stream: Windows' send errors as PyAV raises them.

On Windows a UDP send after an ICMP "port unreachable" (no player listening yet) fails with
WSAECONNRESET; FFmpeg's ff_neterrno passes that code through raw (-10054) and PyAV raises it as
av.error.UndefinedError, which is no OSError. Winsock cannot exist here: the first encoder's
sends fail with exactly the exception PyAV makes of -10054 (av.error.err_check), and, as FFmpeg's
write error is sticky, keep failing. Everything else (encoder, muxer, socket, receiver) is real.
"""

from __future__ import annotations

import socket
import time

import numpy as np
from av.error import err_check
from dreamcam.sinks import udp
from dreamcam.frames import Frame


def test_udp_stream_recovers_from_a_windows_connreset(monkeypatch):
    monkeypatch.setattr(udp, "RESEND_FIRST_S", 0.1)
    monkeypatch.setattr(udp, "RESEND_MAX_S", 0.2)
    real_encode, first = udp.AvEncoder.encode, []

    def encode(self, image, t_capture):
        if not first:
            first.append(self)
        if self is first[0]:
            err_check(-10054)  # raises av.error.UndefinedError(10054, ...)
        return real_encode(self, image, t_capture)

    monkeypatch.setattr(udp.AvEncoder, "encode", encode)
    rng = np.random.default_rng(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.02)
        sink = udp.UdpSink("127.0.0.1", rx.getsockname()[1], 64, 64, 30.0).start()
        received = 0
        try:
            deadline = time.monotonic() + 5.0
            while sink.written < 10 and time.monotonic() < deadline:
                sink.write(Frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), time.perf_counter()))
                time.sleep(1 / 30)
                try:
                    while True:
                        received += len(rx.recv(65536))
                except OSError:
                    pass
        finally:
            sink.close()
    assert sink.written >= 10, f"the stream did not come back: {sink.written} frames sent, error {sink.error!r}"
    assert sink.error is None and sink.outages == 1 and received > 0
