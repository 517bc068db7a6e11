"""The screen source with mss against a real Xvfb display this module starts, and `dreamcam devices` there.

The display shows a known picture drawn by a tiny tkinter window (no window manager, so the
geometry is exact). Skipped, with the reason, where Xvfb or tkinter is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.sources.specs import open_source
from dreamcam.sources import ScreenSource

SCREEN_W, SCREEN_H = 320, 240
BACKGROUND = (200, 40, 40)  # RGB of the full-screen window
SQUARE = (30, 180, 90)  # RGB of the square at SQUARE_BOX
SQUARE_BOX = (40, 60, 80, 50)  # x, y, w, h

DRAW = """
import sys, tkinter as tk
W, H, bg, fg, (x, y, w, h) = {W}, {H}, "{bg}", "{fg}", {box}
root = tk.Tk()
root.overrideredirect(True)
root.geometry(f"{{W}}x{{H}}+0+0")
c = tk.Canvas(root, width=W, height=H, bg=bg, highlightthickness=0, bd=0)
c.pack()
c.create_rectangle(x, y, x + w - 1, y + h - 1, fill=fg, outline=fg)
root.update()
print("ready", flush=True)
sys.stdin.read()
"""


def _hex(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


class Xvfb:
    """A private Xvfb server on a free display number (`-displayfd`), with the known picture."""

    def __init__(self, width: int = SCREEN_W, height: int = SCREEN_H) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.painter: subprocess.Popen | None = None
        self.display = ""

    def start(self, display: str | None = None) -> Xvfb:
        if shutil.which("Xvfb") is None:
            pytest.skip("Xvfb not installed (Debian: apt-get install -y xvfb)")
        w, h = self.size
        read_fd, write_fd = os.pipe()
        where = [display] if display else ["-displayfd", str(write_fd)]
        self.proc = subprocess.Popen(
            ["Xvfb", *where, "-screen", "0", f"{w}x{h}x24", "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        if display:
            self.display = display
            os.close(read_fd)
            sock = f"/tmp/.X11-unix/X{display.lstrip(':')}"
            deadline = time.monotonic() + 10
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            with os.fdopen(read_fd) as f:
                number = f.readline().strip()
            if not number:
                self.stop()
                pytest.skip("Xvfb did not start")
            self.display = f":{number}"
        return self

    def paint(self) -> None:
        """Cover the screen with BACKGROUND and draw SQUARE; waits until it is on screen."""
        try:
            import tkinter  # noqa: F401
        except ImportError:
            pytest.skip("python tkinter missing (Debian: apt-get install -y python3-tk)")
        code = DRAW.format(W=self.size[0], H=self.size[1], bg=_hex(BACKGROUND), fg=_hex(SQUARE), box=SQUARE_BOX)
        env = {**os.environ, "DISPLAY": self.display}
        self.painter = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.painter.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let the server finish the expose/draw

    def stop(self) -> None:
        for p in (self.painter, self.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        self.painter = self.proc = None

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
