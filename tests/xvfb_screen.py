"""A private Xvfb display showing a known picture (a tkinter window: no window manager, so the
geometry is exact), for the screen source and `dreamcam devices`. Skips the test, with the reason,
where Xvfb or tkinter is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

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
