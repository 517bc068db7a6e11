"""A player joining the UDP stream mid-way starts within about a second whatever the engine's
rate: keyframes by time (not every `fps` frames), each with the stream headers. Real loopback
sockets, decoded back by PyAV."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.frames import Frame  # noqa: E402
from dreamcam.sinks import open_sink  # noqa: E402
from dreamcam.sinks.encoders import video_codec  # noqa: E402

SLOW_FPS = 2.0  # the engine's rate: a slow model on a slow machine
SINK_FPS = 30.0  # the sink's rate (the source's), which used to set the keyframe interval


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _SlowEngine:
    """Writes a changing picture into the sink at `fps` from a thread until closed."""

    def __init__(self, sink, fps: float) -> None:
        self.sink, self.fps, self.i = sink, fps, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            img = np.full((64, 96, 3), 40, np.uint8)
            img[:, (self.i * 8) % 80 : (self.i * 8) % 80 + 16] = (240, 200, 40)
            self.sink.write(Frame(img, time.perf_counter(), self.i))
            self.i += 1
            self._stop.wait(1 / self.fps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _receive_timed(sock: socket.socket, seconds: float) -> list[tuple[float, bytes]]:
    got, deadline = [], time.monotonic() + seconds
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            got.append((time.monotonic(), sock.recv(65536)))
        except TimeoutError:
            pass
    return got


def _frames_in(data: bytes) -> int:
    try:
        with av.open(io.BytesIO(data), format="mpegts") as c:
            return sum(1 for _ in c.decode(video=0))
    except (av.FFmpegError, IndexError):  # no video stream found yet (no PAT/PMT)
        return 0


def _first_picture_s(datagrams: list[tuple[float, bytes]], joined: float) -> float | None:
    """Seconds from joining until the datagrams received so far first decode to a picture."""
    for k in range(1, len(datagrams) + 1):
        if _frames_in(b"".join(d for _, d in datagrams[:k])):
            return datagrams[k - 1][0] - joined
    return None


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_a_receiver_joining_a_2_fps_stream_decodes_a_picture_within_a_second(codec):
    port = _free_udp_port()
    with open_sink(f"udp://127.0.0.1:{port}?codec={codec}", width=96, height=64, fps=SINK_FPS) as sink:
        engine = _SlowEngine(sink, SLOW_FPS)
        try:
            time.sleep(1.3)  # the stream runs (into the void) before anyone listens
            late = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            late.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            late.bind(("127.0.0.1", port))
            joined = time.monotonic()
            datagrams = _receive_timed(late, 2.5)
            late.close()
        finally:
            engine.close()
    assert sink.error is None and datagrams
    waited = _first_picture_s(datagrams, joined)
    # a keyframe within 1 s of capture time, plus up to one 0.5 s frame interval to reach it
    assert waited is not None and waited <= 1.6, waited


def _keyframe_packets(data: bytes) -> list[tuple[float, bytes]]:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(video=0) if p.size and p.is_keyframe]


def _h264_nal_types(data: bytes) -> set[int]:
    types, i = set(), data.find(b"\x00\x00\x01")
    while i >= 0:
        types.add(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
@pytest.mark.parametrize("rate", [SLOW_FPS, SINK_FPS])
def test_keyframes_come_every_second_of_capture_time_and_carry_the_headers(codec, rate):
    """At 2 frames/s and at the sink's full 30 frames/s alike: a keyframe at most 1 s (plus
    one frame) after the last, and not many more than one a second."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    with open_sink(f"udp://127.0.0.1:{rx.getsockname()[1]}?codec={codec}", width=96, height=64,
                   fps=SINK_FPS) as sink:
        engine = _SlowEngine(sink, rate)
        datagrams = _receive_timed(rx, 4.2)
        engine.close()
    rx.close()
    assert sink.error is None
    keys = _keyframe_packets(b"".join(d for _, d in datagrams))
    times = [t for t, _ in keys]
    assert len(keys) >= 4, times
    assert max(np.diff(times)) <= 1.0 + 1 / rate + 0.05, times
    assert min(np.diff(times)) >= 0.9 - 1 / rate, times
    h264 = codec == "auto" and video_codec() == "libx264"
    for _, data in keys:
        if h264:
            assert {7, 8, 5} <= _h264_nal_types(data)  # SPS, PPS, and an IDR slice
        else:
            assert data.startswith(b"\x00\x00\x01\xb3")  # MPEG-2 sequence header
