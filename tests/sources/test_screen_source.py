"""The screen source with mss against a real Xvfb display showing a known picture (xvfb_screen.py).

Skipped, with the reason, where Xvfb or tkinter is missing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.sources import SignalLost
from dreamcam.sources import ScreenSource
from dreamcam.sources.specs import open_source

from xvfb_screen import BACKGROUND, SCREEN_H, SCREEN_W, SQUARE, SQUARE_BOX, Xvfb


@pytest.fixture(scope="module")
def xvfb():
    with Xvfb() as x:
        x.paint()
        yield x


@pytest.fixture
def display(xvfb, monkeypatch):
    monkeypatch.setenv("DISPLAY", xvfb.display)
    return xvfb.display


def _read(src, n: int = 3, timeout: float = 2.0):
    frames = []
    for _ in range(n):
        f = src.read(timeout)
        assert f is not None, "no frame from the screen source"
        frames.append(f)
    return frames


def test_screen_monitor_capture_sees_the_picture(display):
    with open_source("screen", fps=30) as src:
        f = _read(src)[-1]
        assert f.image.shape == (SCREEN_H, SCREEN_W, 3) and f.image.dtype == np.uint8
        np.testing.assert_array_equal(f.image[5, 5], BACKGROUND)
        np.testing.assert_array_equal(f.image[SCREEN_H - 3, SCREEN_W - 3], BACKGROUND)
        x, y, w, h = SQUARE_BOX
        np.testing.assert_array_equal(f.image[y : y + h, x : x + w], np.broadcast_to(SQUARE, (h, w, 3)))
        np.testing.assert_array_equal(f.image[y - 1, x], BACKGROUND)
        assert src.box == {"left": 0, "top": 0, "width": SCREEN_W, "height": SCREEN_H}
    with open_source("screen:0") as src:  # all monitors together: here the same one
        assert _read(src, 1)[0].image.shape == (SCREEN_H, SCREEN_W, 3)


def test_screen_region_capture(display):
    x, y, w, h = SQUARE_BOX
    with open_source(f"screen:{x - 10},{y - 5},{w + 20},{h + 10}", mirror=True) as src:
        img = _read(src, 2)[-1].image
    assert img.shape == (h + 10, w + 20, 3)
    inner = img[5 : 5 + h, 10 : 10 + w]
    np.testing.assert_array_equal(inner, np.broadcast_to(SQUARE, (h, w, 3)))
    np.testing.assert_array_equal(img[0, 0], BACKGROUND)
    np.testing.assert_array_equal(img[:, :10], np.broadcast_to(BACKGROUND, (h + 10, 10, 3)))


def test_screen_source_paces_and_grabs_in_its_own_thread(display):
    with ScreenSource(1, fps=20) as src:
        _read(src, 2)
        time.sleep(1.0)
        assert 15 <= src.fps <= 25, src.fps
        assert src.grabber_thread == "dreamcam-screen"  # mss objects are bound to the thread that made them
        assert not src.signal_lost


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("screen:5", DeviceError, "monitor 5 does not exist; this display has monitors 1..1"),
        ("screen:300,200,100,100", DeviceError, "lies outside the desktop (320x240 at 0,0)"),
        ("screen:-1,0,10,10", DeviceError, "lies outside the desktop"),
    ],
)
def test_screen_bad_monitor_or_region(display, spec, error, words):
    src = open_source(spec)
    with pytest.raises(error) as e:
        src.start()
    src.close()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_screen_malformed_region_needs_no_display():
    with pytest.raises(ConfigError, match=r"X,Y,W,H \(4 whole numbers"):
        open_source("screen:0,0,abc,10")


def test_screen_survives_the_display_going_away_and_coming_back(tmp_path, monkeypatch):
    server = Xvfb().start()
    try:
        monkeypatch.setenv("DISPLAY", server.display)
        with ScreenSource(1, fps=30, retry_first_s=0.2, retry_max_s=0.4) as src:
            _read(src, 2)
            server.stop()  # the X server dies under the grabber
            deadline = time.monotonic() + 5
            while not src.signal_lost and time.monotonic() < deadline:
                src.read(0.1)
            assert src.signal_lost
            server.start(server.display)
            deadline = time.monotonic() + 10
            while src.reconnects == 0 and time.monotonic() < deadline:
                src.read(0.1)
            assert src.reconnects == 1 and src.error is None
            f = _read(src, 2)[-1]
            assert f.image.shape == (SCREEN_H, SCREEN_W, 3) and not src.signal_lost
    finally:
        server.stop()


def test_a_screen_grab_failure_without_a_message_still_names_what_failed():
    class Gone:  # an mss grabber whose display vanished and whose error has no text
        def grab(self, box):
            raise OSError()

    src = ScreenSource(1)
    src._sct, src.box = Gone(), {"left": 0, "top": 0, "width": 8, "height": 8}
    with pytest.raises(SignalLost, match="screen grab failed: OSError$"):
        src._grab()
