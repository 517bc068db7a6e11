"""Sources with real parts: OpenCV reading real mp4/png files written here, real threads and timing.

There is no camera here: the webcam source reads a video file through the same VideoCapture
path (OpenCV opens files and cameras alike); its reconnect path is the real one.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from dreamcam.control.controller import Bypass
from dreamcam.errors import ConfigError, DeviceError, DreamcamError
from dreamcam.runtime.runner import Runner
from dreamcam.sinks import open_sink
from dreamcam.sources import TestPatternSource, WebcamSource
from dreamcam.sources import ImageSource, VideoFileSource
from dreamcam.sinks.base import parse_size
from dreamcam.sources.specs import open_source

W, H = 64, 48


def write_clip(path, frames: int = 10, fps: float = 20.0, size=(W, H)) -> str:
    """An mp4 whose left half is blue and right half red (BGR on disk); frame i has a gray
    stripe of value 20 * (i % 12) in its top 8 rows, so a frame's index can be read back."""
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert out.isOpened()
    for i in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = (255, 0, 0)
        img[:, w // 2 :] = (0, 0, 255)
        img[:8] = 20 * (i % 12)
        out.write(img)
    out.release()
    return str(path)


def stripe(image: np.ndarray) -> int:
    return round(float(image[2:6].mean()) / 20)


def read_n(src, n: int, timeout: float = 2.0) -> list:
    frames = []
    deadline = time.monotonic() + timeout * n
    while len(frames) < n and time.monotonic() < deadline:
        f = src.read(0.2)
        if f is not None:
            frames.append(f)
    assert len(frames) == n, f"got {len(frames)} of {n} frames"
    return frames


def test_webcam_source_reads_through_videocapture_bgr_to_rgb(tmp_path):
    clip = write_clip(tmp_path / "cam.mp4")
    with WebcamSource(clip, width=1280, height=720, fps=30) as src:
        f = read_n(src, 1)[0]
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert src.size == (W, H)  # a file ignores the requested size; the source says what it got
        left, right = f.image[24, 8].astype(int), f.image[24, 56].astype(int)
        assert left[2] > 200 and left[0] < 40, left  # blue in RGB order
        assert right[0] > 200 and right[2] < 40, right
        assert f.t_capture <= time.perf_counter()
    with WebcamSource(clip, mirror=True) as src:
        img = read_n(src, 1)[0].image.astype(int)
        assert img[24, 8, 0] > 200 and img[24, 56, 2] > 200  # red on the left now


def test_webcam_source_survives_device_loss_and_resumes(tmp_path, caplog):
    clip = write_clip(tmp_path / "cam.mp4", frames=5)
    gone = str(tmp_path / "unplugged.mp4")
    caplog.set_level(logging.DEBUG, logger="dreamcam.sources.base")
    src = WebcamSource(clip, retry_first_s=0.2, retry_max_s=0.4)
    with src:
        os.rename(clip, gone)  # the open capture still reads its 5 frames, then the device is gone
        # a camera keeps only its newest frame, so a reader slowed by load may see fewer than 5:
        # wait for the last one (index 4), which is always kept
        last, deadline = None, time.monotonic() + 10.0
        while (last is None or last.index < 4) and time.monotonic() < deadline:
            last = src.read(0.2) or last
        assert last is not None and last.index == 4, last
        t_lost = time.monotonic()
        while not src.signal_lost and time.monotonic() - t_lost < 2:
            assert src.read(0.05) is None
        assert src.signal_lost and src.reconnects == 0
        time.sleep(1.5)
        assert src.read(0.05) is None and src.signal_lost and src.error is None
        os.rename(gone, clip)
        t_back = time.monotonic()
        frames = read_n(src, 3)
        resumed = time.monotonic() - t_back
        # a file read as a camera ends after its 5 frames, so by now it may be lost (and back) again
        assert src.reconnects >= 1
        assert resumed < 1.0, resumed  # the next try comes at most retry_max_s (0.4 s) later
        # the file again, from its start: the k-th frame after the re-open (index 5 + k) is file
        # frame k. Newest-only, so a reader slowed by load may miss the first ones (CI once saw 6 first)
        first = frames[0]
        assert 5 <= first.index <= 9, first.index
        assert stripe(first.image) == first.index - 5, (first.index, stripe(first.image))
    failures = [r for r in caplog.records if "re-open" in r.getMessage() and "failed" in r.getMessage()]
    # tries at 0.2, 0.6, 1.0, 1.4 s (doubling, capped at 0.4 s) while the file was away ~1.6 s
    assert 3 <= len(failures) <= 5, [r.getMessage() for r in failures]
    gaps = np.diff([r.created for r in failures])
    assert np.all(gaps > 0.3) and np.all(gaps < 0.7), gaps  # 0.4 s each: doubled from 0.2, capped
    assert src._cap is None  # released on close


def test_camera_that_does_not_open_on_macos_names_the_camera_permission(monkeypatch):
    # a camera OpenCV cannot open (a real, unopened VideoCapture); macOS stood in for by sys.platform
    monkeypatch.setattr(sys, "platform", "darwin")
    src = WebcamSource(0, open_capture=lambda device: cv2.VideoCapture())
    with pytest.raises(DeviceError, match=r"camera 0 did not open; cameras are numbered from 0; .*Privacy & Security -> Camera"):
        src.start()
    src.close()


def test_silence_counts_as_signal_lost(tmp_path, monkeypatch):
    """No failure, just no frame for STALL_S (as when a driver read blocks): still reported lost."""
    from dreamcam.sources import base as sources

    monkeypatch.setattr(sources, "STALL_S", 0.3)
    clip = write_clip(tmp_path / "slow.mp4", frames=3)
    with VideoFileSource(clip, fps=1.25) as src:  # a frame every 0.8 s
        read_n(src, 1)
        assert not src.signal_lost
        time.sleep(0.5)
        assert src.signal_lost and not src._lost and src.reconnects == 0
        read_n(src, 1)
        assert not src.signal_lost


def test_file_source_loops_at_its_own_fps(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=12, fps=25.0)
    with open_source(f"file:{clip}") as src:
        assert isinstance(src, VideoFileSource) and src.file_fps == 25.0 and src.target_fps == 25.0
        frames = read_n(src, 30, timeout=1.0)
        time.sleep(0.6)
        assert abs(src.fps - 25.0) < 2.5, src.fps
        assert src.loops >= 2 and src.reconnects == 0 and src.dropped > 0
    # newest-only: a reader slowed by load may miss a frame, so each frame is checked by its index
    # (the source counts every frame it reads from the file): file frame index % 12, in order, two loops
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] >= 24, idx
    codes = [stripe(f.image) for f in frames]
    assert codes == [i % 12 for i in idx], (codes, idx)
    dt = np.diff([f.t_capture for f in frames]) / np.diff(idx)
    assert 0.03 < float(np.median(dt)) < 0.05  # 40 ms apart


def test_file_source_fps_override(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=12, fps=25.0)
    with open_source(f"file:{clip}", fps=50) as src:
        read_n(src, 2)
        time.sleep(0.8)
        assert abs(src.fps - 50.0) < 5.0, src.fps


def test_image_source_repeats_exact_pixels(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = str(tmp_path / "still.png")
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with open_source(f"image:{path}", fps=40) as src:
        a, b = read_n(src, 2)
        np.testing.assert_array_equal(a.image, rgb)
        a.image[:] = 0  # a consumer scribbling on its frame does not change the next
        np.testing.assert_array_equal(read_n(src, 1)[0].image, rgb)
        assert b.t_capture > a.t_capture and b.index > a.index
        time.sleep(0.6)
        assert abs(src.fps - 40.0) < 4.0, src.fps
    with ImageSource(path, mirror=True) as src:
        np.testing.assert_array_equal(read_n(src, 1)[0].image, rgb[:, ::-1])


def test_testpattern_and_close_is_idempotent():
    src = open_source("testpattern", width=80, height=60, fps=50)
    assert isinstance(src, TestPatternSource)
    with src:
        f = read_n(src, 1)[0]
        assert f.image.shape == (60, 80, 3)
        assert not src.signal_lost
    src.close()
    src.close()
    assert src.read(0.01) is None


def _garbage(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"this is not media\n" * 50)
    return str(p)


@pytest.mark.parametrize(
    "make_spec, error, words",
    [
        (lambda t: f"file:{t}/missing.mp4", DeviceError, "video file not found: "),
        (lambda t: f"file:{_garbage(t, 'clip.mp4')}", DeviceError, "cannot read video"),
        (lambda t: f"file:{t}", DeviceError, "is a folder; give a file"),
        (lambda t: f"image:{t}/missing.png", DeviceError, "image not found: "),
        (lambda t: f"image:{_garbage(t, 'photo.png')}", DeviceError, "cannot read image"),
        (lambda t: "webcam:7", DeviceError, "camera 7 did not open;"),
        (lambda t: "webcam:/dev/video9", DeviceError, "camera /dev/video9 does not exist;"),
    ],
)
def test_bad_inputs_fail_at_start_with_one_line(tmp_path, make_spec, error, words):
    src = open_source(make_spec(tmp_path))
    with pytest.raises(error) as e:
        src.start()
    src.close()
    msg = str(e.value)
    assert words in msg and "\n" not in msg and e.value.exit_code == 2
    if "webcam" in msg or "camera" in msg:
        assert "dreamcam devices" in msg


@pytest.mark.parametrize(
    "spec, words",
    [
        ("screen:0,0,abc,10", "X,Y,W,H (4 whole numbers"),
        ("screen:0,0,10", "X,Y,W,H (4 whole numbers"),
        ("screen:0,0,0,10", "width and height must be > 0"),
        ("screen:left", "monitor number or X,Y,W,H"),
        ("file:", "file needs a path"),
        ("bogus:1", "unknown source 'bogus:1'"),
    ],
)
def test_malformed_specs_are_config_errors(spec, words):
    with pytest.raises(ConfigError) as e:
        open_source(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_webcam_bad_fourcc_and_fps():
    with pytest.raises(ConfigError, match="4 characters"):
        open_source("webcam:0", fourcc="MJPEG")
    with pytest.raises(ConfigError, match="> 0"):
        open_source("webcam:0", fps=0)


def test_screen_without_display_says_so(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    src = open_source("screen")
    with pytest.raises(DreamcamError) as e:
        src.start()
    src.close()
    assert str(e.value).startswith("no display: screen capture needs an X server/desktop session; set DISPLAY")
    assert "\n" not in str(e.value)


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size("640X480") == (640, 480)
    for bad in ("1280", "x720", "0x10", "12.5x3", "axb"):
        with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
            parse_size(bad)


# A camera lost mid-run: the real runner keeps its output going with the last good frame, then
# the "no signal" card, and resumes by itself when the camera (a video file read through the
# webcam source's VideoCapture path) comes back. The runner runs in its bypass mode (frames pass
# the engine untouched, through the real Controller and ParamStore): this is about the source
# and the loop, not the model.
def test_runner_rides_through_camera_loss(tmp_path):
    clip = write_clip(tmp_path / "cam.mp4", frames=8)
    gone = str(tmp_path / "unplugged.mp4")
    src = WebcamSource(clip, retry_first_s=0.2, retry_max_s=0.4)
    with open_sink("null", width=64, height=64) as sink, src:
        # the card after 0.8 s of silence instead of 3 s, to keep the test short
        run = Runner(src, None, [sink], width=64, height=64, controller=Bypass(), no_signal_after=0.8)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(run.run()), name="test-runner")
        os.rename(clip, gone)
        t.start()
        try:
            deadline = time.monotonic() + 10
            while not src.signal_lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert src.signal_lost
            time.sleep(0.3)  # the runner takes what the source had before it went silent
            frames_before = run.stats.frames
            time.sleep(1.5)  # longer than NO_SIGNAL_AFTER_S: last frame, then the card
            assert run.stats.frames == frames_before and run._no_signal is not None
            repeats = run.stats.repeats
            assert repeats >= 10  # output kept flowing at ~10 fps while silent
            written_silent = sink.written
            os.rename(gone, clip)
            deadline = time.monotonic() + 5
            while run.stats.frames < frames_before + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert run.stats.frames >= frames_before + 3 and src.reconnects >= 1
            assert sink.written > written_silent and t.is_alive()
        finally:
            run.stop()
            t.join(timeout=5)
    assert not t.is_alive() and result["frames"] >= frames_before + 3
    assert src.error is None and sink.error is None
