"""The virtual-camera sink through pyvirtualcam's real `Camera`, with an in-memory backend
registered through `pyvirtualcam.register_backend` (no video device exists here), and what it
tells users to install where no backend works."""

from __future__ import annotations

import glob
import platform
import sys
import time

import numpy as np
import pytest
from waiting import poll

pyvirtualcam = pytest.importorskip("pyvirtualcam")
from pyvirtualcam.camera import BACKENDS  # noqa: E402
from pyvirtualcam.util import encode_fourcc  # noqa: E402

from dreamcam.errors import ConfigError, DeviceError  # noqa: E402
from dreamcam.frames import Frame, fit  # noqa: E402
from dreamcam.cli import devices  # noqa: E402
from dreamcam.sinks import virtualcam as sinks  # noqa: E402
from dreamcam.sinks import VirtualCamSink, open_sink  # noqa: E402


class MemoryCamera:
    """A pyvirtualcam backend (the protocol of pyvirtualcam.Backend) keeping what it is sent."""

    last: MemoryCamera | None = None

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        if fourcc != encode_fourcc(pyvirtualcam.PixelFormat.RGB.value):
            raise ValueError(f"memory camera takes RGB only, got fourcc {fourcc:#x}")
        self.width, self.height, self.fps = width, height, fps
        self._device = device or "memory0"
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = 0
        MemoryCamera.last = self

    def send(self, frame: np.ndarray) -> None:
        assert frame.ndim == 1 and frame.flags.c_contiguous and frame.dtype == np.uint8
        self.frames.append(frame.copy())
        self.times.append(time.perf_counter())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)


class BrokenCamera(MemoryCamera):
    def __init__(self, **kw) -> None:
        raise RuntimeError("broken on purpose")


@pytest.fixture
def memory_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, "memory", MemoryCamera)
    MemoryCamera.last = None
    return MemoryCamera


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], axis=-1).astype(np.uint8)
    img[rng.integers(0, h, 20), rng.integers(0, w, 20)] = 255
    return img


def _loopback_devices_present() -> bool:
    for path in glob.glob("/sys/devices/virtual/video4linux/video*/name"):
        return True if open(path).read().strip() else False
    return False


def test_frames_arrive_rgb_at_output_size_letterboxed(memory_backend):
    sink = open_sink("virtualcam:memory", width=64, height=64, fps=30, output_size=(128, 72))
    images = [_image(64, 64, seed=i) for i in range(3)]
    with sink:
        cam = memory_backend.last
        assert (cam.width, cam.height, cam.fps) == (128, 72, 30)
        for i, img in enumerate(images):
            sink.write(Frame(img, time.perf_counter(), i))
            time.sleep(1 / 30 + 0.01)
    assert cam.closed == 1 and sink.written == 3 and sink.dropped == 0 and sink.error is None
    for img, got in zip(images, cam.frames, strict=True):
        got = got.reshape(72, 128, 3)
        assert np.array_equal(got, fit(img, 128, 72, "letterbox"))
        assert not got[:, :28].any() and not got[:, -28:].any()  # the bars: 64x64 -> 72x72 in the middle


@pytest.mark.parametrize("mode", ["crop", "stretch"])
def test_other_framings_match_fit(memory_backend, mode):
    img = _image(48, 80)
    with open_sink(f"virtualcam:memory?fit={mode}&size=64x64", width=80, height=48) as sink:
        sink.write(Frame(img))
        deadline = time.monotonic() + 2
        while not memory_backend.last.frames and time.monotonic() < deadline:
            time.sleep(0.005)
    assert np.array_equal(memory_backend.last.frames[0].reshape(64, 64, 3), fit(img, 64, 64, mode))


def test_pacing_caps_at_output_fps_without_delaying_slow_input(memory_backend):
    fps = 20.0
    with open_sink("virtualcam:memory", width=32, height=32, fps=fps, output_size=(32, 32)) as sink:
        cam = memory_backend.last
        t_end = time.perf_counter() + 0.6
        n = 0
        while time.perf_counter() < t_end:  # the engine at ~200 fps: the camera gets <= 20 fps
            sink.write(Frame(_image(32, 32), time.perf_counter(), n))
            n += 1
            time.sleep(0.005)
        time.sleep(0.1)
        fast_sent = len(cam.frames)
        gaps = np.diff(cam.times)
        assert 0.6 * fps * 0.7 <= fast_sent <= 0.6 * fps + 2, fast_sent  # the rate holds, never above
        assert gaps.min() >= 0.5 / fps - 0.002, gaps.min()
        assert np.median(gaps) >= 1 / fps - 0.002, np.median(gaps)
        assert sink.dropped == n - fast_sent
        time.sleep(1 / fps)
        waits = []
        for i in range(5):  # the engine slower than the camera: every frame goes out at once
            t = time.perf_counter()
            sink.write(Frame(_image(32, 32), t, i))
            assert poll(lambda: len(cam.frames) == fast_sent + i + 1, timeout_s=2.0), len(cam.frames)
            waits.append(cam.times[-1] - t)
            time.sleep(0.1)
        # held for the next 50 ms slot it would wait 25 ms on average; the median forgives one
        # frame the scheduler held up on a loaded machine
        assert float(np.median(waits)) < 0.02, waits
    assert sink.written == fast_sent + 5


@pytest.mark.skipif(_loopback_devices_present(), reason="a real v4l2 device is present: auto would pick it")
def test_without_a_named_backend_every_registered_one_is_tried(memory_backend, monkeypatch):
    monkeypatch.setitem(BACKENDS, "broken", BrokenCamera)
    sink = open_sink("virtualcam", width=32, height=32, output_size=(64, 48))
    with sink:
        assert sink.backend_name == "memory"
        assert memory_backend.last.device() == "memory0"


def test_device_is_passed_to_the_backend(memory_backend):
    with open_sink("virtualcam:memory:/dev/video42", width=32, height=32) as sink:
        assert memory_backend.last.device() == "/dev/video42"
        assert (memory_backend.last.width, memory_backend.last.height) == (1280, 720)
        assert sink.backend_name == "memory"


@pytest.mark.skipif(_loopback_devices_present(), reason="a real v4l2 device is present")
def test_no_backend_is_one_line_with_reasons_and_what_to_install(monkeypatch):
    monkeypatch.delitem(BACKENDS, "memory", raising=False)
    monkeypatch.setitem(BACKENDS, "broken", BrokenCamera)
    sink = open_sink("virtualcam", width=32, height=32)
    with pytest.raises(DeviceError) as info:
        sink.start()
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("no virtual camera backend is usable")
    assert "'broken' backend: broken on purpose" in msg
    if "v4l2loopback" in BACKENDS:  # Linux: pyvirtualcam's own reason, then the commands
        assert "'v4l2loopback' backend:" in msg
        assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dreamcam" in msg
        assert "v4l2loopback-dkms" in msg
    sink.close()
    sink.close()


def test_named_backend_failure_says_which(monkeypatch):
    monkeypatch.setitem(BACKENDS, "broken", BrokenCamera)
    sink = VirtualCamSink(64, 48, 30, backend="broken")
    with pytest.raises(DeviceError, match=r"virtual camera backend 'broken' failed \(.*broken on purpose\); to fix: "):
        sink.start()


def test_unknown_backend_is_a_config_error_listing_those_here(memory_backend):
    with pytest.raises(ConfigError, match=r"unknown virtual camera backend 'nope'; here: .*memory"):
        open_sink("virtualcam:nope", width=32, height=32)


def test_odd_output_size_is_refused():
    with pytest.raises(ConfigError, match="even"):
        open_sink("virtualcam", width=32, height=32, output_size=(641, 480))


# What the virtual-camera lines tell Windows and macOS users to install. pyvirtualcam's README:
# Windows needs OBS 26.0+; macOS needs OBS 28+ since pyvirtualcam 0.10 and, on macOS 13 and later,
# OBS 30+ since 0.14 (pyproject allows any pyvirtualcam >= 0.11). The OS is stood in for by
# patching what the code asks (platform.system / sys.platform).
@pytest.mark.parametrize(("system", "plat", "version"), [("Darwin", "darwin", "OBS Studio 30+"), ("Windows", "win32", "OBS Studio 26+")])
def test_run_and_devices_name_the_obs_version_pyvirtualcam_needs(monkeypatch, system, plat, version):
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(sys, "platform", plat)
    assert version in sinks.install_hint()
    report = {"cameras": [], "screen": {"display": None, "monitors": [], "error": None},
              "virtualcam": [{"name": "obs", "usable": False, "device": None, "error": "not found", "hint": None}]}
    assert f"to get one: {sinks.install_hint()}" in devices.format_report(report)


def test_macos_hint_keeps_the_older_obs_for_older_macos(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert "28+ on macOS 12 and older" in sinks.install_hint()
