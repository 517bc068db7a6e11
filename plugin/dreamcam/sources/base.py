"""The source contract (`Source`: a capture thread, newest-only, reconnecting; described in
`dreamcam.sources`) and the helpers the OpenCV-based sources share."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame, LatestSlot
from dreamcam.runtime.stats import RateMeter

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5  # first re-open attempt after a loss; doubles each failure
RETRY_MAX_S = 5.0
STALL_S = 2.0  # no frame for this long counts as a lost signal even while a read blocks


class SignalLost(Exception):
    """Raised by a source's `_grab` when the device stopped giving frames; the thread reconnects."""


class Source:
    """Base: a thread calling `_grab()` in a loop and putting each image in a `LatestSlot`.

    Subclasses implement `_open` (calling thread, at start: raise DreamcamError), `_grab`
    (capture thread: RGB uint8 (H, W, 3), None for "nothing new", SignalLost on a device
    failure), `_reopen` (capture thread, after a loss: raise anything to be retried later) and
    `_release` (idempotent; runs in the capture thread as it ends, or in `close()`).

    Args:
        fps: pace the loop at this rate (frames/s, > 0); None reads as fast as `_grab` returns.
        mirror: flip every frame left-right (a selfie view).
        retry_first_s, retry_max_s: re-open back-off after a loss (seconds).
    """

    kind = "source"

    def __init__(
        self,
        *,
        fps: float | None = None,
        mirror: bool = False,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        if fps is not None and not fps > 0:
            raise ConfigError(f"source fps must be > 0, got {fps!r}")
        self.target_fps = fps
        self.mirror = mirror
        self.retry_first_s, self.retry_max_s = retry_first_s, retry_max_s
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        self._rate = RateMeter(window=30)  # capture times of the last 30 frames
        self._lost = False
        self._last_t = 0.0
        self.reconnects = 0
        self.error: BaseException | None = None

    def _open(self) -> None:
        pass

    def check(self) -> None:
        """What `start()` would fail on (a missing file or device node, no display), raising the
        same one-line DreamcamError; run before the slow model load so a typo is said at once.
        Opens the source and releases it again (a camera overrides this: opening one is slow)."""
        self._open()
        self._release_quietly()

    def _grab(self) -> np.ndarray | None:
        raise NotImplementedError

    def _reopen(self) -> None:
        self._open()

    def _release(self) -> None:
        pass

    def start(self) -> Source:
        self._open()
        self._last_t = time.perf_counter()
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
                try:
                    image = self._grab()
                except SignalLost as e:
                    self._recover(e)
                    next_t = time.perf_counter()
                    continue
                if image is None:
                    continue
                if self.mirror:
                    image = cv2.flip(image, 1)
                now = time.perf_counter()
                self._slot.put(Frame(image, now, self._index))
                self._index += 1
                self._last_t = now
                self._rate.tick(now)
        except BaseException as e:  # handed to the reader, never lost in the thread
            log.error("%s source failed: %s", self.kind, e)
            self.error = e
            self._slot.close()
        finally:
            self._release_quietly()

    def _release_quietly(self) -> None:
        """Release a device that may already be broken (a lost X connection raises on close)."""
        try:
            self._release()
        except Exception as e:
            log.debug("%s: release after failure: %s", self.kind, e)

    def _recover(self, cause: BaseException) -> None:
        """Release, then re-open with back-off until it works or the source is closed."""
        self._lost = True
        log.warning("%s: signal lost (%s); reconnecting", self.kind, cause)
        self._release_quietly()
        delay, tries = self.retry_first_s, 0
        while not self._stop.wait(delay):
            tries += 1
            try:
                self._reopen()
            except Exception as e:  # the device is still gone: try again later
                log.debug("%s: re-open %d failed: %s", self.kind, tries, e)
                self._release_quietly()
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.reconnects += 1
            self._lost = False
            self._last_t = time.perf_counter()
            log.warning("%s: signal back after %d re-open tries", self.kind, tries)
            return

    def read(self, timeout: float | None = 0.5) -> Frame | None:
        frame = self._slot.get(timeout)
        if frame is None and self.error is not None:
            raise self.error
        return frame

    @property
    def signal_lost(self) -> bool:
        """True while the device gives no frames (failed reads, or silent for `STALL_S` seconds)."""
        if self._thread is None:
            return False
        return self._lost or time.perf_counter() - self._last_t > STALL_S

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    @property
    def frames(self) -> int:
        return self._index

    @property
    def fps(self) -> float:
        """Frames per second over the last 30 captured; 0 once frames stop coming."""
        return self._rate.rate

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
            if thread.is_alive():  # blocked in a driver read: it releases the device when that returns
                log.warning("%s capture thread still blocked in a read; it will release the device when it returns", self.kind)
                return
        self._release()

    def __enter__(self) -> Source:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (failed probes) while the block runs."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA / gray uint8 image -> RGB uint8 (H, W, 3)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_file(path: str, what: str) -> None:
    """DeviceError unless `path` is an existing file (`what` names it in the message)."""
    if not os.path.exists(path):
        raise DeviceError(f"{what} not found: {path} (check the path; it is relative to {os.getcwd()})")
    if os.path.isdir(path):
        raise DeviceError(f"{what} {path} is a folder; give a file")
