"""The UDP stream across a re-open, on real loopback sockets, demuxed back with PyAV.

Send failures are real: a loopback broadcast address (127.255.255.255) refuses every send
(EACCES: FFmpeg does not set SO_BROADCAST), and FFmpeg's `connect=1` reports a port nobody
listens on as ECONNREFUSED. Both are Linux behaviour of the kernel, on 127.0.0.0/8 only.
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

from dreamcam.sinks import udp  # noqa: E402
from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.sinks.udp import UdpSink  # noqa: E402
from dreamcam.frames import Frame  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux loopback send errors")
REFUSED_HOST = "127.255.255.255"  # loopback broadcast: every send fails with EACCES
BITS, W, H = 16, 128, 64


def coded(i: int) -> np.ndarray:
    """A frame that carries the number i (16 bits) as black/white 8-pixel columns."""
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * 8 : (b + 1) * 8] = 255
    return img


def code_of(img: np.ndarray) -> int:
    """The number `coded` put into a (decoded, possibly rescaled) picture."""
    gray = img.mean(axis=2)
    h, w = gray.shape
    cols = [gray[h // 4 : 3 * h // 4, int((b + 0.3) * w / BITS) : int((b + 0.7) * w / BITS)].mean() for b in range(BITS)]
    return sum(1 << b for b, v in enumerate(cols) if v > 128)


class _ConnectedUdpSink(UdpSink):
    """The real sink with FFmpeg's connect=1: sends fail (ECONNREFUSED) while nobody listens."""

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


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_a_reopened_stream_is_back_only_once_a_packet_went_out(monkeypatch, caplog, codec):
    # MPEG-2 holds its first frame (one frame of encoder delay): before the fix each re-open
    # "worked" on that frame although nothing was sent, so an outage logged "failed" / "works
    # again" every 0.5 s for as long as it lasted, never backed off, counted an outage each time,
    # and counted frames as written that went nowhere.
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


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_a_player_that_stays_keeps_decoding_new_frames_after_a_reopen(monkeypatch, codec):
    # What a player listening all along receives: stream 1, nothing during the outage, then the
    # re-opened stream 2 (its timestamps and continuity counters start again). The bytes demux
    # as one stream; stream 2 starts with a keyframe, so decoding resumes at its first frame and
    # goes on to the last one sent, at the frames' own pace. (A real OBS: test_udp_reopen_obs.py.)
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
