"""Sink basics: non-blocking writes, framing, spec parsing, the recorder's files."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from dreamcam.sinks.encoders import video_codec
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame, fit
from dreamcam.sinks import FileSink, Framer, NullSink, Sink, open_sink, parse_bitrate, parse_size


class SlowSink(Sink):
    """A real sink whose output takes 30 ms a frame (a slow device)."""

    kind = "slow"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.got: list[int] = []

    def _send(self, frame: Frame) -> None:
        time.sleep(0.03)
        self.got.append(frame.index)


def _image(h: int, w: int, i: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), np.full_like(x, 80)], axis=-1).astype(np.uint8)
    x0 = (i * 4) % max(1, w - 8)
    img[:, x0 : x0 + 8] = (250, 250, 30)
    return img


def test_a_slow_sink_drops_and_counts_and_never_blocks_the_writer():
    img = _image(64, 64)
    with SlowSink(64, 64) as sink:
        costs = []
        for i in range(200):
            t = time.perf_counter()
            sink.write(Frame(img, t, i))
            costs.append(time.perf_counter() - t)
            time.sleep(0.001)
    assert np.median(costs) < 50e-6, np.median(costs)  # microseconds, while the sink takes 30 ms a frame
    assert sink.written + sink.dropped == 200
    assert sink.dropped > 150 and sink.written == len(sink.got) >= 5
    assert sink.got == sorted(sink.got) and sink.got[-1] == 199  # the newest always goes out
    assert all(lat > 0 for lat in sink.latencies_ms)


def test_close_is_idempotent_and_a_failing_sink_reports_its_error():
    class Failing(Sink):
        kind = "failing"

        def _send(self, frame: Frame) -> None:
            raise OSError("device unplugged")

    sink = Failing(8, 8).start()
    sink.write(Frame(_image(8, 8)))
    sink.close()
    sink.close()
    assert isinstance(sink.error, OSError) and sink.written == 0
    assert not any(t.name == "dreamcam-sink-failing" for t in threading.enumerate())


def test_null_sink_counts():
    with open_sink("null", width=32, height=32) as sink:
        assert isinstance(sink, NullSink)
        for i in range(5):
            sink.write(Frame(_image(32, 32), time.perf_counter(), i))
            time.sleep(0.01)
    assert sink.written == 5


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "crop"])
@pytest.mark.parametrize("src", [(512, 512), (720, 1280), (48, 64), (100, 30)])
def test_framer_gives_the_pixels_of_fit(mode, src):
    framer = Framer(128, 72, mode)
    for i in range(2):
        img = _image(*src, i)
        assert np.array_equal(framer(img), fit(img, 128, 72, mode))
    other = _image(72, 40)  # the input size changes: old bars must not stay behind
    assert np.array_equal(framer(other), fit(other, 128, 72, mode))


def test_framer_passes_same_size_through_and_checks_the_mode():
    img = _image(72, 128)
    assert Framer(128, 72)(img) is img
    with pytest.raises(ConfigError, match="letterbox"):
        Framer(128, 72, "zoom")


def test_parse_size_and_bitrate():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_bitrate("4M") == 4_000_000 and parse_bitrate("2500k") == 2_500_000 and parse_bitrate(800000) == 800_000
    for bad in ("1280", "axb", "1281x720", "8x8"):
        with pytest.raises(ConfigError, match="--output-size"):
            parse_size(bad)
    with pytest.raises(ConfigError, match="100k..100M"):
        parse_bitrate("50k")


def test_open_sink_defaults_and_overrides():
    vc = open_sink("virtualcam", width=512, height=512, fps=25)
    assert (vc.width, vc.height, vc.fps, vc.backend, vc.device) == (1280, 720, 25, None, None)
    vc = open_sink("virtualcam:/dev/video7?fps=60", width=512, height=512, output_size=(640, 480), output_fps=30)
    assert (vc.width, vc.height, vc.fps, vc.device) == (640, 480, 60, "/dev/video7")
    rec = open_sink("file:/tmp/x.mp4", width=512, height=512, fps=30, bitrate=3_000_000)
    assert (rec.width, rec.height, rec.bitrate, rec.path) == (512, 512, 3_000_000, "/tmp/x.mp4")
    udp = open_sink("udp://[::1]:5000?bitrate=2M&size=640x360", width=512, height=512, bitrate=1_000_000)
    assert (udp.host, udp.port, udp.bitrate, udp.width, udp.height) == ("::1", 5000, 2_000_000, 640, 360)
    assert udp.url == "udp://[::1]:5000?pkt_size=1316"


@pytest.mark.parametrize(
    "spec, kw, match",
    [
        ("hdmi", {}, "unknown sink 'hdmi'"),
        ("file:", {}, "file sink needs a path"),
        ("null?fps=0", {}, "1..240"),
        ("null?fps=fast", {}, "must be a number"),
        ("null", {"output_fps": 500}, "1..240"),
        ("virtualcam?fit=zoom", {}, "fit must be one of"),
        ("virtualcam?codec=h264", {}, "unknown option 'codec'"),
        ("file:out.mp4?codec=vp9", {}, "auto, h264 or mp4v"),
        ("file:out.mp4", {"output_size": (99, 100)}, "even"),
    ],
)
def test_bad_sink_specs_are_one_clear_line(spec, kw, match):
    with pytest.raises(ConfigError, match=match):
        open_sink(spec, width=64, height=64, **kw)


def _read_all(path: str) -> tuple[list[np.ndarray], float, float]:
    """Frames (RGB), duration in s and the frame rate OpenCV reports."""
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    import av

    with av.open(path) as c:
        duration = float(c.duration) / 1e6
    return frames, duration, fps


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("codec", ["auto", "mp4v"])
def test_recorder_has_every_frame_at_the_output_size_and_the_real_duration(tmp_path, codec):
    path = str(tmp_path / "out.mp4")
    n, fps = 45, 30.0
    t0 = time.perf_counter() - n / fps
    sent = [_image(48, 64, i) for i in range(n)]
    with open_sink(f"file:{path}?codec={codec}&size=96x48", width=64, height=48, fps=fps) as sink:
        for i, img in enumerate(sent):  # as fast as possible: the recorder buffers, it does not drop
            sink.write(Frame(img, t0 + i / fps, i))
    assert sink.error is None and sink.dropped == 0 and sink.written == n
    frames, duration, _ = _read_all(path)
    assert len(frames) == n
    assert all(f.shape == (48, 96, 3) for f in frames)
    assert abs(duration - n / fps) < 0.1, duration
    for got, img in zip(frames, sent, strict=True):
        assert _psnr(got, fit(img, 96, 48, "letterbox")) > 30


@pytest.mark.parametrize(("codec", "decoder"), [
    pytest.param("auto", "h264", marks=pytest.mark.skipif(video_codec() != "libx264", reason="PyAV here has no libx264")),
    ("mp4v", "mpeg4"),
])
def test_a_recording_keeps_the_real_timing_of_uneven_frames(tmp_path, codec, decoder):
    import av

    path = str(tmp_path / "uneven.mp4")
    gaps = [0.0, 0.02, 0.1, 0.02, 0.3, 0.05]
    times = np.cumsum(gaps) + time.perf_counter() - 1.0
    with FileSink(path, 64, 48, 30.0, codec=codec) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(_image(48, 64, i), float(t), i))
    with av.open(path) as c:
        assert c.streams.video[0].codec_context.name == decoder
        pts = [float(f.time) for f in c.decode(video=0)]
    assert np.allclose(np.diff(pts), gaps[1:], atol=0.002), pts


def test_without_libx264_a_recording_is_mpeg4_and_codec_h264_says_so(tmp_path, monkeypatch):
    # PyAV builds without libx264 exist (some distributions' packages); here PyPI's wheel has it,
    # so its codec list is stood in for: every encoder but libx264
    import av

    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    path = str(tmp_path / "auto.mp4")
    with FileSink(path, 64, 48, 30.0) as sink:
        for i in range(5):
            sink.write(Frame(_image(48, 64, i), 1.0 + i / 30, i))
    with av.open(path) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
        assert sum(1 for _ in c.decode(video=0)) == 5
    with pytest.raises(DeviceError, match="no libx264 encoder; use codec=mp4v"):
        FileSink(str(tmp_path / "h264.mp4"), 64, 48, codec="h264").start()
    assert not (tmp_path / "h264.mp4").exists()  # refused before any file was made


def test_recorder_errors_at_start(tmp_path):
    with pytest.raises(DeviceError, match="does not exist"):
        FileSink(str(tmp_path / "no" / "such" / "out.mp4"), 64, 48).start()
    with pytest.raises(DeviceError, match="cannot record to"):
        FileSink(str(tmp_path / "out.nosuchformat"), 64, 48).start()
