"""The preview window's second overlay line (the flicker figure of `dreamcam run`), seen in a
screenshot of a real X server (Xvfb started here); the window lives in a child process, as in
test_preview.py (Qt aborts its process when its X server goes away)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dreamcam.sinks.preview import opencv_has_gui

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
W, H = 200, 120

CHILD = r"""
import sys, time
import numpy as np
from dreamcam.frames import Frame
from dreamcam.sinks import open_sink

W, H = 200, 120
sink = open_sink("preview", width=W, height=H, fps=30)
with sink:
    for step in ("BARE", "OVERLAY"):
        if step == "OVERLAY":
            sink.overlay = lambda: "flicker 3.1 (0.80x input)"
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            sink.write(Frame(np.zeros((H, W, 3), np.uint8), time.perf_counter(), 0))
            time.sleep(1 / 30)
        print(step, flush=True)
        sys.stdin.readline()
"""


@pytest.fixture
def display():
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "400x300x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=5)


def text_lines(rows: np.ndarray) -> int:
    """How many bands of rows hold white pixels: the lines of overlay text."""
    return int(np.flatnonzero(np.diff((rows > 0).astype(int)) == 1).size)


def white_rows(display: str) -> np.ndarray:
    """Per screen row, the count of near-white pixels (the overlay text on a black frame)."""
    import mss

    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        with mss.MSS() as sct:
            shot = np.asarray(sct.grab(sct.monitors[0]))[..., :3]
    finally:
        os.environ.pop("DISPLAY") if old is None else os.environ.__setitem__("DISPLAY", old)
    return np.all(shot > 200, axis=-1).sum(axis=1)


@pytest.mark.skipif(not opencv_has_gui(), reason="OpenCV here is headless (pip install opencv-python)")
def test_the_preview_shows_the_flicker_line_under_the_fps_line(display):
    env = dict(os.environ, DISPLAY=display, PYTHONPATH=PLUGIN)
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "BARE"
        bare = white_rows(display)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "OVERLAY"
        shown = white_rows(display)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=20) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert bare.sum() > 30 and shown.sum() > bare.sum() + 30
    assert (text_lines(bare), text_lines(shown)) == (1, 2)  # one line of text, then two
