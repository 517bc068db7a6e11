"""The preview window: an OpenCV window with an fps / latency / dropped overlay (and, from
`dreamcam run`, the flicker figure) and keys.

Keys: q or Esc quits (calls `on_quit`), space toggles bypass (calls `on_bypass`); closing the
window counts as q. Needs OpenCV with a GUI (`opencv-python`, not `opencv-python-headless`)
and a display.

OpenCV's Qt and GTK windows belong to the thread that first made one: a window call from
any other thread, even after that thread ended, blocks forever. So one process-wide GUI
thread makes every window call; each `PreviewSink` thread frames and annotates its images and
hands the newest one to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from dreamcam.errors import DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks.base import Framer, Sink

log = logging.getLogger(__name__)

QUIT_KEYS = (ord("q"), ord("Q"), 27)
BYPASS_KEY = ord(" ")


def opencv_has_gui() -> bool:
    """True when this OpenCV build has a window toolkit (False for opencv-python-headless)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


def _x_display_opens(name: str) -> bool | None:
    """Whether X display `name` accepts a connection; None when libX11 is not there to ask."""
    lib = ctypes.util.find_library("X11") or "libX11.so.6"
    try:
        x11 = ctypes.CDLL(lib)
    except OSError:
        return None
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(name.encode())
    if not display:
        return False
    x11.XCloseDisplay(display)
    return True


def check_display() -> None:
    """Raise DeviceError unless a preview window can open here (GUI OpenCV, a reachable display).

    Checked before any window call: without a display Qt aborts the whole process.
    """
    if not opencv_has_gui():
        raise DeviceError(
            "the preview needs OpenCV with a GUI, this one is headless: "
            "pip uninstall -y opencv-python-headless && pip install opencv-python"
        )
    if sys.platform == "darwin":  # Cocoa windows must live on the main thread, the engine loop's
        raise DeviceError("the preview window is not available on macOS yet (Cocoa windows need the main thread); "
                          "watch the output through --sink virtualcam in OBS or Photo Booth instead")
    if sys.platform.startswith("linux"):
        display = os.environ.get("DISPLAY", "")
        if not display:
            raise DeviceError("the preview needs a display and DISPLAY is not set: run it in a desktop session "
                              "(or under Xvfb: Xvfb :99 & export DISPLAY=:99), or use another --sink")
        if _x_display_opens(display) is False:
            raise DeviceError(f"the preview cannot connect to the X display {display!r}: is the X server running and "
                              "may this user use it (xhost / XAUTHORITY)? Or use another --sink")


class _Gui:
    """The one thread making OpenCV window calls; lives as long as the process (see module doc)."""

    _instance: _Gui | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls) -> _Gui:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, np.ndarray] = {}  # newest image per window, not shown yet
        self._owners: dict[str, PreviewSink] = {}
        self._closing: dict[str, threading.Event] = {}
        self._shown: set[str] = set()  # windows made
        self._visible: set[str] = set()  # windows seen on screen (so a window not mapped yet is not "closed")
        threading.Thread(target=self._run, name="dreamcam-gui", daemon=True).start()

    def attach(self, title: str, owner: PreviewSink) -> None:
        with self._cond:
            self._owners[title] = owner

    def show(self, title: str, bgr: np.ndarray) -> None:
        with self._cond:
            if title in self._owners:
                self._pending[title] = bgr
                self._cond.notify_all()

    def detach(self, title: str, timeout: float = 2.0) -> None:
        """Destroy the window (waits up to `timeout` s for the GUI thread)."""
        done = threading.Event()
        with self._cond:
            self._owners.pop(title, None)
            self._pending.pop(title, None)
            self._closing[title] = done
            self._cond.notify_all()
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._shown or self._closing or self._pending):
                    self._cond.wait(0.05)  # no window up: nothing to pump
                pending, self._pending = self._pending, {}
                closing, self._closing = self._closing, {}
                owners = dict(self._owners)
            try:
                self._step(pending, closing, owners)
            except Exception as e:  # a window failure is reported to its sinks, the loop goes on
                log.error("preview window failed: %s", e)
                for owner in owners.values():
                    owner.error = owner.error or e
                time.sleep(0.1)
            for done in closing.values():
                done.set()

    def _step(self, pending: dict, closing: dict, owners: dict) -> None:
        for title in closing:
            self._visible.discard(title)
            if title in self._shown:
                self._shown.discard(title)
                cv2.destroyWindow(title)
        for title, bgr in pending.items():
            if title not in self._shown:
                cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)  # no toolbar
                self._shown.add(title)
            cv2.imshow(title, bgr)
        if not (self._shown or closing):
            return
        key = cv2.waitKey(5) & 0xFF
        for title in list(self._shown):
            if cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) >= 1:
                self._visible.add(title)
            elif title in self._visible and title in owners:  # closed by the user: same as q
                self._visible.discard(title)
                with self._cond:
                    self._owners.pop(title, None)
                owners[title]._key(QUIT_KEYS[0])
        if key != 0xFF:
            for owner in owners.values():
                owner._key(key)


class PreviewSink(Sink):
    """An on-screen window showing the output with an overlay: fps, glass-to-glass latency and
    frames this window skipped.

    Args:
        width, height: window image size in pixels (default: the engine size).
        on_quit: called (from the GUI thread) on q, Esc or closing the window.
        on_bypass: called on space.
        title: window title (one window per title).
    """

    kind = "preview"

    def __init__(self, width: int, height: int, fps: float = 30.0, *, on_quit: Callable[[], None] | None = None,
                 on_bypass: Callable[[], None] | None = None, fit_mode: str = "letterbox", title: str = "dreamcam") -> None:
        super().__init__(width, height, fps)
        self.on_quit, self.on_bypass, self.title = on_quit, on_bypass, title
        self.quit_requested = threading.Event()
        self._framer = Framer(width, height, fit_mode)
        self._shown_at: deque[float] = deque(maxlen=30)
        self._gui: _Gui | None = None
        self.overlay: Callable[[], str] | None = None  # a second overlay line (dreamcam run: the flicker figure)

    def _open(self) -> None:
        check_display()
        self._gui = _Gui.get()
        self._gui.attach(self.title, self)

    def _send(self, frame: Frame) -> None:
        bgr = cv2.cvtColor(self._framer(frame.image), cv2.COLOR_RGB2BGR)  # a new image: the overlay never touches the frame
        now = time.perf_counter()
        self._shown_at.append(now)
        span = self._shown_at[-1] - self._shown_at[0]
        fps = (len(self._shown_at) - 1) / span if span > 0 else 0.0
        recent = list(self.latencies_ms)[-30:]
        latency = float(np.median(recent)) if recent else (now - frame.t_capture) * 1000.0
        lines = [f"{fps:5.1f} fps  {latency:5.0f} ms  dropped {self.dropped}"]
        if self.overlay is not None:
            lines.append(self.overlay())
        scale = max(0.35, min(1.0, self.width / 900))
        for i, text in enumerate(lines):
            org = (8, 8 + int(22 * scale) * (i + 1) + 4 * i)
            cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        self._gui.show(self.title, bgr)

    def _key(self, key: int) -> None:
        if key in QUIT_KEYS:
            if not self.quit_requested.is_set():
                log.info("preview: quit")
                self.quit_requested.set()
                if self.on_quit is not None:
                    self.on_quit()
        elif key == BYPASS_KEY and self.on_bypass is not None:
            self.on_bypass()

    def _release(self) -> None:
        if self._gui is not None:
            self._gui.detach(self.title)
            self._gui = None
