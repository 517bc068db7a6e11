"""Capture sources. Each runs in its own named thread and exposes only its newest frame.

`open_source(spec, ...)` parses a `--source` value. Every source:

- `start()` opens the device and starts the capture thread (errors at open are DreamcamError);
- `read(timeout)` returns the newest `Frame` not yet read, or None when none came in time;
- `dropped`: frames captured but never read (the consumer was slower);
- `fps`: measured capture rate; `close()` is idempotent; the source is a context manager.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from dreamcam.errors import ConfigError
from dreamcam.frames import Frame, LatestSlot

log = logging.getLogger(__name__)


class Source:
    """Base: a thread calling `_grab()` in a loop and putting each image in a `LatestSlot`."""

    kind = "source"

    def __init__(self, *, fps: float | None = None) -> None:
        self.target_fps = fps
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        self._times: list[float] = []
        self.error: BaseException | None = None

    # subclasses: open the device (raise DreamcamError), grab one RGB uint8 image, release
    def _open(self) -> None:
        pass

    def _grab(self) -> np.ndarray | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def start(self) -> Source:
        self._open()
        self._thread = threading.Thread(target=self._loop, name=f"dreamcam-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        period = 1.0 / self.target_fps if self.target_fps else 0.0
        next_t = time.perf_counter()
        try:
            while not self._stop.is_set():
                if period:
                    delay = next_t - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    next_t = max(next_t + period, time.perf_counter() - period)
                image = self._grab()
                if image is None:
                    continue
                now = time.perf_counter()
                self._slot.put(Frame(image, now, self._index))
                self._index += 1
                self._times.append(now)
                if len(self._times) > 60:
                    del self._times[:-60]
        except BaseException as e:  # handed to the reader, never lost in the thread
            log.error("%s source failed: %s", self.kind, e)
            self.error = e
            self._slot.close()

    def read(self, timeout: float | None = 0.5) -> Frame | None:
        frame = self._slot.get(timeout)
        if frame is None and self.error is not None:
            raise self.error
        return frame

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    @property
    def frames(self) -> int:
        return self._index

    @property
    def fps(self) -> float:
        t = self._times[-30:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._thread = None
        self._release()

    def __enter__(self) -> Source:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TestPatternSource(Source):
    """A moving synthetic pattern: colour gradient, a bouncing disc and a sweeping bar."""

    kind = "testpattern"
    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 1280, height: int = 720, *, fps: float | None = 30.0) -> None:
        super().__init__(fps=fps)
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        self._x, self._y = x, y
        base = np.empty((height, width, 3), dtype=np.uint8)
        base[..., 0] = (x / max(1, width - 1) * 255).astype(np.uint8)
        base[..., 1] = (y / max(1, height - 1) * 255).astype(np.uint8)
        base[..., 2] = 128
        self._base = base

    def _grab(self) -> np.ndarray:
        return self.pattern(self._index)

    def pattern(self, i: int) -> np.ndarray:
        """Frame i of the pattern (deterministic)."""
        w, h = self.width, self.height
        img = self._base.copy()
        bar = (i * 8) % w
        img[:, bar : bar + max(2, w // 64)] = 255
        r = max(4, min(w, h) // 8)
        cx = int(r + (w - 2 * r) * (0.5 + 0.5 * np.sin(i * 0.05)))
        cy = int(r + (h - 2 * r) * (0.5 + 0.5 * np.cos(i * 0.07)))
        y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r), max(0, cx - r), min(w, cx + r)
        disc = (self._x[y0:y1, x0:x1] - cx) ** 2 + (self._y[y0:y1, x0:x1] - cy) ** 2 < r * r
        img[y0:y1, x0:x1][disc] = (250, 200, 40)
        return img


def open_source(spec: str, *, width: int = 1280, height: int = 720, fps: float | None = None) -> Source:
    """Build (not start) the source a `--source` value names."""
    kind, _, arg = spec.partition(":")
    if kind == "testpattern":
        return TestPatternSource(width, height, fps=fps if fps is not None else 30.0)
    raise ConfigError(
        f"unknown source {spec!r}; use webcam[:N], screen[:MONITOR | :X,Y,W,H], file:PATH, image:PATH or testpattern"
    )
