"""What keeps a player's frame buffer short on the UDP stream: each video PES says its length (a
demuxer hands a frame on without waiting for the next), and while the engine is slow the last
picture is sent again at the stream's rate (a player holding N frames then lags N/fps, not N
engine frames). Real loopback sockets, decoded back by PyAV."""

from __future__ import annotations

import io
import socket
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.frames import Frame  # noqa: E402
from dreamcam.sinks import open_sink  # noqa: E402


def _drain(sock: socket.socket) -> bytes:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except TimeoutError:
            return b"".join(out)


def _picture(i: int) -> np.ndarray:
    img = np.full((48, 64, 3), 30, np.uint8)
    img[:, (i * 8) % 48 : (i * 8) % 48 + 16] = 220
    return img


def _decoded(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        return sum(1 for _ in c.decode(video=0))


def _video_pes_starts(ts: bytes) -> list[bytes]:
    """The start of each video PES in an MPEG-TS byte string (stream id 0xE0)."""
    found = []
    for i in range(0, len(ts) - 187, 188):
        packet = ts[i : i + 188]
        unit_start, control = packet[1] & 0x40, (packet[3] >> 4) & 3
        payload = packet[4 + 1 + packet[4] :] if control & 2 else packet[4:]  # skip an adaptation field
        if unit_start and control & 1 and payload[:4] == b"\x00\x00\x01\xe0":
            found.append(payload)
    return found


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_every_video_pes_carries_its_length(receiver, codec):
    with open_sink(f"udp://127.0.0.1:{receiver.getsockname()[1]}?codec={codec}", width=64, height=48, fps=30) as sink:
        for i in range(5):
            sink.write(Frame(_picture(i), time.perf_counter(), i))
            time.sleep(1 / 30)
    pes = _video_pes_starts(_drain(receiver))
    assert len(pes) >= 5
    assert all(int.from_bytes(p[4:6], "big") > 0 for p in pes)  # 0 would mean "until the next one"


def test_a_slow_engine_s_last_picture_is_sent_again_at_the_stream_rate(receiver):
    with open_sink(f"udp://127.0.0.1:{receiver.getsockname()[1]}", width=64, height=48, fps=30) as sink:
        for i in range(4):  # 2 frames/s for 2 s
            sink.write(Frame(_picture(i), time.perf_counter(), i))
            time.sleep(0.5)
    assert sink.error is None and sink.written == 4
    # after the second engine frame (the first gap tells the engine is slow): about 30 a second
    assert 30 <= sink.repeats <= 50, sink.repeats
    assert _decoded(_drain(receiver)) == 4 + sink.repeats


def test_an_engine_at_the_stream_rate_that_stops_is_not_repeated(receiver):
    with open_sink(f"udp://127.0.0.1:{receiver.getsockname()[1]}", width=64, height=48, fps=30) as sink:
        for i in range(15):
            sink.write(Frame(_picture(i), time.perf_counter(), i))
            time.sleep(1 / 30)
        time.sleep(0.6)  # the engine paused: the player keeps the last picture anyway
    assert sink.repeats == 0
    assert _decoded(_drain(receiver)) == 15
