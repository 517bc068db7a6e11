"""The UDP stream when its sends fail: the sink re-opens it and it comes back, on real loopback
sockets, demuxed back with PyAV.

Send failures are real: a loopback broadcast address (127.255.255.255) refuses every send
(EACCES: FFmpeg does not set SO_BROADCAST), and FFmpeg's `connect=1` reports a port nobody
listens on as ECONNREFUSED. Both are Linux behaviour of the kernel, on 127.0.0.0/8 only.
Windows' send error (WSAECONNRESET, which PyAV raises as no OSError) is stood in for.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from av.error import err_check  # noqa: E402
from dreamcam.sinks import udp  # noqa: E402
from dreamcam.sinks import UdpSink
from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.frames import Frame  # noqa: E402

from coded_frames import H, W, code_of, coded  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux loopback send errors")
REFUSED_HOST = "127.255.255.255"  # loopback broadcast: every send fails with EACCES
class _ConnectedUdpSink(UdpSink):
    """The real sink with FFmpeg's `connect=1`: the kernel then reports a loopback port that nobody
    listens on (ICMP port unreachable) as ECONNREFUSED on the next send, until someone listens
    there. A real send failure that comes and goes, on 127.0.0.1 only."""

    @property
    def url(self) -> str:
        return super().url + "&connect=1"


def _drain(sock: socket.socket) -> bytes:
    data = b""
    try:
        while True:
            data += sock.recv(65536)
    except OSError:
        return data


def _udp_socket(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.01)
    return s


@linux_only
@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_a_reopened_stream_is_back_only_once_a_packet_went_out(monkeypatch, caplog, codec):
    # MPEG-2 holds its first frame (one frame of encoder delay): a re-open must not count as
    # working on that frame when nothing was sent, or an outage logs "failed" / "works again"
    # every 0.5 s for as long as it lasts, never backs off, counts an outage each time, and counts
    # frames as written that went nowhere.
    monkeypatch.setattr(udp, "RESEND_FIRST_S", 0.05)
    monkeypatch.setattr(udp, "RESEND_MAX_S", 0.2)
    caplog.set_level(logging.WARNING)
    rx = _udp_socket()
    sink = UdpSink(REFUSED_HOST, rx.getsockname()[1], W, H, 30.0, codec=codec).start()
    data, i = b"", 0
    try:
        t_end = time.monotonic() + 1.2
        while time.monotonic() < t_end:  # down: every send is refused
            sink.write(Frame(coded(i), time.perf_counter(), i))
            i += 1
            time.sleep(1 / 30)
        assert isinstance(sink.error, OSError), sink.error
        # (MPEG-2's first frame counts: the encoder took it before any send had failed)
        assert sink.written <= 1 and sink.outages == 0, f"{sink.written} frames counted as sent while every send failed"
        assert not [r for r in caplog.records if "works again" in r.getMessage()]
        assert len([r for r in caplog.records if "sink failed" in r.getMessage()]) == 1
        sink.host = "127.0.0.1"  # the network comes back: the next re-open reaches the receiver
        t_end = time.monotonic() + 5.0
        while sink.written < 10 and time.monotonic() < t_end:
            sink.write(Frame(coded(i), time.perf_counter(), i))
            i += 1
            time.sleep(1 / 30)
            data += _drain(rx)
        assert sink.written >= 10 and sink.error is None and sink.outages == 1
    finally:
        sink.close()
        data += _drain(rx)
        rx.close()
    with av.open(io.BytesIO(data), format="mpegts") as c:
        got = [code_of(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert len(got) >= 10 and got == sorted(got) and got[-1] == i - 1


@linux_only
@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_a_player_that_stays_keeps_decoding_new_frames_after_a_reopen(monkeypatch, codec):
    # What a player listening all along receives: stream 1, nothing during the outage, then the
    # re-opened stream 2 (its timestamps and continuity counters start again). The bytes demux
    # as one stream; stream 2 starts with a keyframe, so decoding resumes at its first frame and
    # goes on to the last one sent, at the frames' own pace. (A real OBS: tests/obs/test_udp_reopen_obs.py.)
    monkeypatch.setattr(udp, "RESEND_FIRST_S", 0.1)
    monkeypatch.setattr(udp, "RESEND_MAX_S", 0.2)
    rx = _udp_socket()
    port = rx.getsockname()[1]
    sink = _ConnectedUdpSink("127.0.0.1", port, W, H, 30.0, codec=codec).start()
    data, i, t_capture = b"", 0, []

    def send_until(done, limit_s=5.0):
        nonlocal data, i
        t_end = time.monotonic() + limit_s
        while not done() and time.monotonic() < t_end:
            t_capture.append(time.perf_counter())
            sink.write(Frame(coded(i), t_capture[-1], i))
            i += 1
            time.sleep(1 / 30)
            if rx is not None:
                data += _drain(rx)
        assert done(), f"timed out: written {sink.written}, error {sink.error!r}, outages {sink.outages}"

    try:
        send_until(lambda: sink.written >= 30)
        rx.close()  # the player goes away for a moment: sends fail, the sink drops its output
        rx = None
        send_until(lambda: sink.error is not None)
        last_before = i - 1
        rx = _udp_socket(port)  # ... and comes back on the same port
        stream1 = len(data)  # the bytes before this are the first stream's
        send_until(lambda: sink.error is None and sink.outages == 1)
        first_after = i - 1  # the frame whose send was the first to reach it again, or a later one
        send_until(lambda: i - first_after >= 30)
        time.sleep(0.1)
    finally:
        sink.close()
        if rx is not None:
            data += _drain(rx)
            rx.close()
    with av.open(io.BytesIO(data[stream1:]), format="mpegts") as c:  # the re-opened stream alone
        first = next(p for p in c.demux(video=0) if p.size)
    assert first.is_keyframe  # a player joining here, or resyncing, starts at once
    with av.open(io.BytesIO(data), format="mpegts") as c:
        frames = [(code_of(f.to_ndarray(format="rgb24")), f.time) for f in c.decode(video=0)]
    codes = [n for n, _ in frames]
    before = [n for n in codes if n <= last_before]
    after = [(n, t) for n, t in frames if n > last_before]
    assert len(before) >= 20 and before == sorted(before)
    # stream 2 decodes from its first frame (sent at the re-open) to the last one sent, in order,
    # paced by its timestamps (the sink may drop a frame that came before its 1/fps tick)
    numbers = [n for n, _ in after]
    assert numbers[0] <= first_after and numbers[-1] == i - 1, numbers
    assert numbers == sorted(set(numbers)) and len(numbers) >= (i - numbers[0]) - sink.dropped - 1, numbers
    gaps = np.diff([t for _, t in after])
    want = np.diff([t_capture[n] for n in numbers])
    tick = 1 / 90000 if codec == "auto" and video_codec() == "libx264" else 1 / 30  # MPEG-2: the next 1/fps tick
    assert np.all(gaps > 0) and np.abs(gaps - want).max() <= tick + 1e-3, (gaps, want)


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_udp_stream_comes_back_after_its_sends_failed(monkeypatch):
    # FFmpeg's output keeps its first write error for good: the sink must re-open it, or one
    # failed send (a network blip) would end the stream for the rest of the run.
    monkeypatch.setattr(udp, "RESEND_FIRST_S", 0.1)
    monkeypatch.setattr(udp, "RESEND_MAX_S", 0.4)
    port = _free_udp_port()
    rng = np.random.default_rng(0)
    rx = None
    sink = _ConnectedUdpSink("127.0.0.1", port, 64, 64, 30.0).start()
    try:
        deadline = time.monotonic() + 5.0
        while sink.error is None and time.monotonic() < deadline:  # nobody listens: sends fail
            sink.write(Frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), time.perf_counter()))
            time.sleep(1 / 30)
        assert isinstance(sink.error, OSError), sink.error
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", port))
        rx.settimeout(0.02)
        written, data = sink.written, b""
        deadline = time.monotonic() + 5.0
        while sink.written - written < 10 and time.monotonic() < deadline:
            sink.write(Frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), time.perf_counter()))
            time.sleep(1 / 30)
            try:
                while True:
                    data += rx.recv(65536)
            except OSError:
                pass
        assert sink.written - written >= 10, f"the stream did not come back: {sink.written - written} frames sent"
        assert sink.error is None and sink.outages == 1  # back: the run does not end in "output failed"
    finally:
        sink.close()
        if rx is not None:
            rx.close()
    # what arrived is a stream a player can join: it decodes to 64x64 pictures
    with av.open(io.BytesIO(data), format="mpegts") as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) >= 5 and frames[0].shape == (64, 64, 3)


# Windows: a UDP send after an ICMP "port unreachable" (no player listening yet) fails with
# WSAECONNRESET; FFmpeg's ff_neterrno passes that code through raw (-10054) and PyAV raises it as
# av.error.UndefinedError, which is no OSError. Winsock cannot exist here: the first encoder's
# sends fail with exactly the exception PyAV makes of -10054 (av.error.err_check) and, as FFmpeg's
# write error is sticky, keep failing. Everything else (encoder, muxer, socket, receiver) is real.
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
