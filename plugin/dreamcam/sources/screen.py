"""The screen source: a monitor or a desktop region through mss."""

from __future__ import annotations

import sys
import threading

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.sources.base import SignalLost, Source


def parse_region(text: str) -> tuple[int, int, int, int]:
    """'X,Y,W,H' in desktop pixels -> (x, y, w, h); ConfigError unless 4 integers with W, H > 0."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError as e:
        raise ConfigError(f"screen region must be X,Y,W,H (4 whole numbers, pixels), got {text!r}; e.g. screen:0,0,1280,720") from e
    if w <= 0 or h <= 0:
        raise ConfigError(f"screen region width and height must be > 0, got {w}x{h} in {text!r}")
    return x, y, w, h


def new_mss():
    """An mss screen grabber for the calling thread (mss objects are bound to their thread).

    Raises DeviceError with one line when there is no display to capture.
    """
    import mss  # lazy: only a screen source loads the capture library

    factory = getattr(mss, "MSS", None) or mss.mss  # mss >= 10.2 has the class, older only mss.mss()
    try:
        return factory()
    except Exception as e:
        if sys.platform.startswith("linux"):
            raise DeviceError(
                "no display: screen capture needs an X server/desktop session; set DISPLAY (e.g. DISPLAY=:0) "
                f"or run from the desktop session, or use Xvfb for a virtual one (mss: {e})"
            ) from e
        raise DeviceError(f"screen capture could not start: {e}; allow screen recording for this terminal/app") from e


class ScreenSource(Source):
    """A monitor or a desktop region through mss, BGRA -> RGB, paced at `fps`.

    Args:
        monitor: mss monitor number, 1.. (0 = all monitors as one image). Ignored with `region`.
        region: (x, y, w, h) in desktop pixels; must lie inside the desktop.
        fps: capture rate (frames/s, > 0).
    """

    kind = "screen"

    def __init__(
        self,
        monitor: int = 1,
        *,
        region: tuple[int, int, int, int] | None = None,
        fps: float = 30.0,
        mirror: bool = False,
        **retry: float,
    ) -> None:
        super().__init__(fps=fps, mirror=mirror, **retry)
        if monitor < 0:
            raise ConfigError(f"monitor must be >= 0 (0 = all monitors), got {monitor}")
        self.monitor, self.region = monitor, region
        self.box: dict[str, int] | None = None  # left, top, width, height in desktop pixels
        self._sct = None
        self.grabber_thread = ""  # name of the thread that made the current grabber

    def _open(self) -> None:
        # validate here, in the caller's thread, with a grabber of its own; the capture thread
        # makes its grabber on its first grab
        sct = new_mss()
        try:
            self.box = self._pick_box(sct.monitors)
            sct.grab(self.box)
        except DeviceError:
            raise
        except Exception as e:
            raise DeviceError(f"screen capture of {self.box} failed: {e}") from e
        finally:
            sct.close()

    def _pick_box(self, monitors: list[dict]) -> dict[str, int]:
        desk = monitors[0]
        if self.region is None:
            if self.monitor >= len(monitors):
                raise DeviceError(
                    f"monitor {self.monitor} does not exist; this display has monitors 1..{len(monitors) - 1} "
                    "(0 = all together); list them with `dreamcam devices`"
                )
            m = monitors[self.monitor]
            return {"left": m["left"], "top": m["top"], "width": m["width"], "height": m["height"]}
        x, y, w, h = self.region
        inside = desk["left"] <= x and desk["top"] <= y and x + w <= desk["left"] + desk["width"] and y + h <= desk["top"] + desk["height"]
        if not inside:
            raise DeviceError(
                f"screen region {x},{y},{w},{h} lies outside the desktop ({desk['width']}x{desk['height']} at "
                f"{desk['left']},{desk['top']}); pick X,Y,W,H inside it"
            )
        return {"left": x, "top": y, "width": w, "height": h}

    def _new_grabber(self):
        self._sct = new_mss()
        self.grabber_thread = threading.current_thread().name
        return self._sct

    def _reopen(self) -> None:
        self.box = self._pick_box(self._new_grabber().monitors)

    def _grab(self) -> np.ndarray:
        try:
            if self._sct is None:
                self._new_grabber()
            shot = self._sct.grab(self.box)
        except Exception as e:  # display gone or changed: reconnect
            raise SignalLost(f"screen grab failed: {str(e) or type(e).__name__}") from e
        w, h = shot.size
        bgra = np.frombuffer(shot.bgra, dtype=np.uint8).reshape(h, w, 4)
        return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)

    def _release(self) -> None:
        sct, self._sct = self._sct, None
        if sct is not None:
            sct.close()
