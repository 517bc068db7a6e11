"""The UDP sink: MPEG-TS datagrams received on a real loopback socket and decoded back by PyAV."""

from __future__ import annotations

import io
import socket
import time

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.sinks.udp import TS_PACKET  # noqa: E402
from dreamcam.errors import ConfigError  # noqa: E402
from dreamcam.frames import Frame, fit  # noqa: E402
from dreamcam.sinks import open_sink  # noqa: E402

FPS = 30.0


def _receive(sock: socket.socket, limit_s: float = 3.0) -> list[bytes]:
    datagrams, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            datagrams.append(sock.recv(65536))
        except TimeoutError:
            break
    return datagrams


def _decode(datagrams: list[bytes]) -> list[tuple[np.ndarray, float]]:
    with av.open(io.BytesIO(b"".join(datagrams)), format="mpegts") as container:
        return [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(video=0)]


def _scene(h: int, w: int, i: int) -> np.ndarray:
    """Smooth gradients plus a moving bar: easy to compress, easy to tell apart frame by frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200 + 20, y / h * 200 + 20, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    x0 = (i * 8) % (w - 16)  # on the 2x2 chroma grid: 4:2:0 keeps the bar's colour edges
    img[:, x0 : x0 + 16] = (240, 240, 40)
    return img


def _stream(sink, frames: int, h: int, w: int, start: int = 0) -> list[np.ndarray]:
    sent = []
    for i in range(start, start + frames):
        img = _scene(h, w, i)
        sent.append(img)
        t = time.perf_counter()
        sink.write(Frame(img, t, i))
        time.sleep(max(0.0, 1 / FPS - (time.perf_counter() - t)) + 0.002)
    return sent


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_stream_decodes_back_to_what_was_sent(receiver, codec):
    port = receiver.getsockname()[1]
    with open_sink(f"udp://127.0.0.1:{port}?codec={codec}", width=96, height=64, fps=FPS) as sink:
        sent = _stream(sink, 20, 64, 96)
        time.sleep(0.2)
    assert sink.error is None and sink.written == 20 and sink.dropped == 0
    datagrams = _receive(receiver)
    assert datagrams and all(len(d) <= TS_PACKET and len(d) % 188 == 0 and d[0] == 0x47 for d in datagrams)
    # each frame flushed at once, in datagrams of up to 7 TS packets (not one datagram per TS packet)
    assert len(datagrams) <= 2 * 20 + sum(map(len, datagrams)) // TS_PACKET + 2
    decoded = _decode(datagrams)
    assert len(decoded) == 20
    with av.open(io.BytesIO(b"".join(datagrams)), format="mpegts") as c:
        name = c.streams.video[0].codec_context.name
    assert name == ({"auto": "h264" if video_codec() == "libx264" else "mpeg2video", "mpeg2": "mpeg2video"}[codec])
    for (got, _), want in zip(decoded, sent, strict=True):
        assert got.shape == (64, 96, 3)
        assert _psnr(got, want) > 36, _psnr(got, want)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 3
    # capture-time timestamps: about 1/FPS apart
    times = np.array([t for _, t in decoded])
    assert np.all(np.diff(times) > 0) and abs(np.median(np.diff(times)) - 1 / FPS) < 0.01


def test_output_size_is_letterboxed_and_a_late_joiner_starts_within_a_second():
    """A receiver that opens after the stream started decodes from the next keyframe on."""
    probe = open_sink("udp://127.0.0.1:9?size=128x64", width=64, height=64, fps=FPS)
    assert (probe.width, probe.height, probe.host, probe.port) == (128, 64, "127.0.0.1", 9)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listening yet: the sink must send into the void without failing
    with open_sink(f"udp://127.0.0.1:{port}?size=128x64", width=64, height=64, fps=FPS) as sink:
        _stream(sink, 10, 64, 64)
        late = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        late.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        late.bind(("127.0.0.1", port))
        late.settimeout(0.3)
        sent = _stream(sink, 40, 64, 64, start=10)
        time.sleep(0.2)
    assert sink.error is None
    decoded = _decode(_receive(late))
    late.close()
    assert 40 - FPS - 2 <= len(decoded) <= 40  # the first keyframe comes within a second
    got, _ = decoded[-1]
    want = fit(sent[-1], 128, 64, "letterbox")
    assert got.shape == (64, 128, 3) and _psnr(got, want) > 30
    assert got[:, :28].max() < 24 and got[:, -28:].max() < 24  # black bars


@pytest.mark.parametrize(
    "spec, match",
    [
        ("udp://127.0.0.1", "udp://HOST:PORT"),
        ("udp://:5000", "udp://HOST:PORT"),
        ("udp://127.0.0.1:70000", "1..65535"),
        ("udp://127.0.0.1:5000?bitrate=fast", "bitrate"),
        ("udp://127.0.0.1:5000?bitrate=1G", "100k..100M"),
        ("udp://127.0.0.1:5000?size=100x75", "even"),
        ("udp://127.0.0.1:5000?codec=vp9", "auto, h264 or mpeg2"),
        ("udp://127.0.0.1:5000?ttl=3", "unknown option 'ttl'"),
    ],
)
def test_bad_udp_specs_are_one_clear_line(spec, match):
    with pytest.raises(ConfigError, match=match):
        open_sink(spec, width=64, height=64)


@pytest.mark.parametrize("fps", [7, 12.5, 29.97, 60, 75])
def test_mpeg2_fallback_opens_at_any_rate(fps):
    with open_sink("udp://127.0.0.1:9?codec=mpeg2", width=64, height=48, fps=fps) as sink:
        assert sink._enc.codec == "mpeg2video" and 1 / sink._enc.time_base >= fps * 0.999


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_a_stream_running_past_the_33_bit_timestamp_wrap_still_decodes_in_order(tmp_path, codec):
    """MPEG-TS timestamps are 33 bits of a 90 kHz clock: they wrap after 26.5 hours of streaming.
    The stream goes on across the wrap, and an FFmpeg-based receiver (OBS's Media Source is one)
    reads every frame with evenly increasing timestamps."""
    from dreamcam.sinks.encoders import AvEncoder

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec}")
    path = tmp_path / "wrap.ts"
    container = av.open(str(path), "w", format="mpegts")
    enc = AvEncoder(container, codec, 128, 96, FPS, 1_000_000)
    enc._t0 = -(2**33 / 90000 - 2.0)  # the first frame 2 s before the wrap, as after 26.5 h running
    n = 120  # 4 s: across the wrap
    for i in range(n):
        enc.encode(np.full((96, 128, 3), (i * 2) % 256, np.uint8), i / FPS)
    enc.close()
    with av.open(str(path)) as reader:
        frames = list(reader.decode(video=0))
        ticks = [round(f.pts * f.time_base * 90000) for f in frames]
    assert len(frames) == n
    steps = set(np.diff(ticks).tolist())
    assert steps in ({3000}, {3003}), steps  # one frame at 30 (MPEG-2: 29.97) fps, no jump at the wrap
    levels = [int(f.to_ndarray(format="rgb24")[48, 64, 0]) for f in frames]
    assert all(abs(got - (i * 2) % 256) <= 6 for i, got in enumerate(levels))  # in order, none lost
