"""The preview window on a real X server (Xvfb started here), seen through a screenshot, with
real key presses (xdotool). The window lives in a child process: Qt aborts its process when
its X server goes away, and the test's Xvfb goes away at the end of the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamcam.errors import DeviceError
from dreamcam.sinks.preview import check_display, opencv_has_gui
from dreamcam.sinks import open_sink
from waiting import poll

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
W, H = 160, 120

CHILD = r"""
import json, sys, threading, time
import numpy as np
from dreamcam.frames import Frame
from dreamcam.sinks import open_sink

W, H = 160, 120
img = np.zeros((H, W, 3), np.uint8)
img[: H // 2, : W // 2] = (255, 0, 0)
img[: H // 2, W // 2 :] = (0, 255, 0)
img[H // 2 :, : W // 2] = (0, 0, 255)
img[H // 2 :, W // 2 :] = (255, 255, 0)
quit_ = threading.Event()
events = []
def on_quit():
    events.append("quit"); print("QUIT", flush=True); quit_.set()
def on_bypass():
    events.append("bypass"); print("BYPASS", flush=True)
sink = open_sink("preview", width=W, height=H, fps=30, on_quit=on_quit, on_bypass=on_bypass)
with sink:
    t_end, i, said = time.monotonic() + 15, 0, False
    while not quit_.is_set() and time.monotonic() < t_end:
        sink.write(Frame(img.copy(), time.perf_counter(), i)); i += 1
        if sink.written and not said:
            said = True; print("SHOWN", flush=True)
        time.sleep(1 / 30)
print(json.dumps({"written": sink.written, "events": events, "error": repr(sink.error)}), flush=True)
"""


def _free_display() -> int:
    for n in range(90, 140):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    pytest.skip("no free X display number")


@pytest.fixture
def xvfb():
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    proc.wait(timeout=5)


def _find(shot: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the pixels within 8 levels of `colour`."""
    mask = np.all(np.abs(shot.astype(int) - np.array(colour)) <= 8, axis=-1)
    ys, xs = np.nonzero(mask)
    if len(xs) < 100:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.skipif(not opencv_has_gui(), reason="OpenCV here is headless (pip install opencv-python)")
def test_window_shows_the_frame_with_overlay_and_answers_keys(xvfb):
    if not shutil.which("xdotool"):
        pytest.skip("xdotool is not installed (apt-get install xdotool)")
    import mss

    env = dict(os.environ, DISPLAY=xvfb, PYTHONPATH=PLUGIN)
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "SHOWN"
        colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
        shot, boxes = None, {}
        os.environ["DISPLAY"], old = xvfb, os.environ.get("DISPLAY")
        try:
            with mss.MSS() as sct:
                def drawn() -> bool:  # the X server paints the window a moment after imshow returns
                    nonlocal shot, boxes
                    shot = np.asarray(sct.grab(sct.monitors[0]))[..., [2, 1, 0]]  # BGRA -> RGB
                    boxes = {c: _find(shot, c) for c in colours}
                    return all(boxes.values())

                poll(drawn, timeout_s=10, interval_s=0.1)
        finally:
            os.environ.pop("DISPLAY") if old is None else os.environ.__setitem__("DISPLAY", old)
        assert all(boxes.values()), boxes
        red, green, blue, yellow = boxes.values()
        assert red[2] == green[0] and red[3] == blue[1] and yellow[0] == blue[2] and yellow[1] == green[3]
        assert (yellow[2] - red[0], yellow[3] - blue[1]) == (W, H // 2)
        x0, y0 = red[0], blue[1] - H // 2
        top = shot[y0 : y0 + 20, x0 : x0 + W]
        assert (np.all(top > 200, axis=-1)).sum() > 30  # the white overlay text over the red/green quadrants

        key = ["xdotool", "search", "--sync", "--name", "^dreamcam$", "windowfocus", "--sync", "key"]
        subprocess.run(key + ["space"], env=env, check=True, timeout=10)
        assert child.stdout.readline().strip() == "BYPASS"
        subprocess.run(key + ["q"], env=env, check=True, timeout=10)
        assert child.stdout.readline().strip() == "QUIT"
        result = json.loads(child.stdout.readline())
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert result["events"] == ["bypass", "quit"] and result["written"] > 0 and result["error"] == "None"


def test_no_display_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    sink = open_sink("preview", width=64, height=64)
    if not opencv_has_gui():
        with pytest.raises(DeviceError, match="pip install opencv-python"):
            sink.start()
        return
    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY only matters on Linux")
    with pytest.raises(DeviceError, match="DISPLAY is not set"):
        sink.start()
    sink.close()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not opencv_has_gui(), reason="X11 display check")
def test_unreachable_display_is_one_clear_line(monkeypatch):
    n = _free_display()
    monkeypatch.setenv("DISPLAY", f":{n}")
    with pytest.raises(DeviceError, match=f"cannot connect to the X display ':{n}'"):
        check_display()


def test_headless_opencv_is_named(monkeypatch):
    """The headless OpenCV build cannot be installed beside the GUI one: its build report is stood in."""
    import cv2

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "General configuration\n  GUI:   NONE\n")
    assert not opencv_has_gui()
    with pytest.raises(DeviceError, match="opencv-python-headless && pip install opencv-python"):
        check_display()
