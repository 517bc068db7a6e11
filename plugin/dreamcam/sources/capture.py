"""Capture sources. Each runs in its own named thread and exposes only its newest frame.

`source_specs.open_source(spec, ...)` parses a `--source` value. Every source:

- `start()` opens the device and starts the capture thread (errors at open are DreamcamError:
  one line that says what is wrong and how to fix it);
- `read(timeout)` returns the newest `Frame` not yet read, or None when none came in time;
- `dropped`: frames captured but never read (the consumer was slower);
- `fps`: measured capture rate; `close()` is idempotent; the source is a context manager;
- `signal_lost`: the device stopped giving frames (read failures, device gone, or no frame for
  `STALL_S`); the thread then re-opens it with back-off (`RETRY_FIRST_S` doubling up to
  `RETRY_MAX_S`) and resumes by itself; `reconnects` counts the recoveries. A lost device never
  raises out of the thread: the runner keeps its output alive meanwhile.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

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


class TestPatternSource(Source):
    """A moving synthetic pattern: colour gradient, a bouncing disc and a sweeping bar."""

    kind = "testpattern"
    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 1280, height: int = 720, *, fps: float | None = 30.0, mirror: bool = False) -> None:
        super().__init__(fps=fps, mirror=mirror)
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.empty((height, width, 3), dtype=np.uint8)
        base[..., 0] = (x / max(1, width - 1) * 255).astype(np.uint8)
        base[..., 1] = (y / max(1, height - 1) * 255).astype(np.uint8)
        base[..., 2] = 128
        self._base = base
        self._r = r = max(4, min(width, height) // 8)
        dy, dx = np.mgrid[-r:r, -r:r]
        self._disc = dx * dx + dy * dy < r * r  # drawn by slicing, so a frame costs one copy

    def _grab(self) -> np.ndarray:
        return self.pattern(self._index)

    def pattern(self, i: int) -> np.ndarray:
        """Frame i of the pattern (deterministic)."""
        w, h = self.width, self.height
        img = self._base.copy()
        bar = (i * 8) % w
        img[:, bar : bar + max(2, w // 64)] = 255
        r = self._r
        cx = int(r + (w - 2 * r) * (0.5 + 0.5 * np.sin(i * 0.05)))
        cy = int(r + (h - 2 * r) * (0.5 + 0.5 * np.cos(i * 0.07)))
        y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r), max(0, cx - r), min(w, cx + r)
        disc = self._disc[y0 - (cy - r) : y1 - (cy - r), x0 - (cx - r) : x1 - (cx - r)]
        img[y0:y1, x0:x1][disc] = (250, 200, 40)
        return img


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


def open_camera(device: int | str) -> cv2.VideoCapture:
    """The default camera opener: V4L2 on Linux, OpenCV's pick elsewhere."""
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") and (isinstance(device, int) or device.startswith("/dev/")) else cv2.CAP_ANY
    return cv2.VideoCapture(device, api)


def present_cameras() -> list[str]:
    """Camera device nodes present on Linux (no probing); empty elsewhere."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)) if sys.platform.startswith("linux") else []


class WebcamSource(Source):
    """A camera through OpenCV's VideoCapture, BGR -> RGB, optionally mirrored.

    Args:
        device: camera index (0..) or device path (`/dev/video0`), or anything `open_capture`
            understands (tests give a video file).
        width, height: requested capture size in pixels (the driver may pick the nearest it has;
            `size` tells what it gave).
        fps: requested capture rate (frames/s); the camera paces the loop, `fps` measures it.
        fourcc: requested pixel format, e.g. "MJPG" (lets USB cameras reach 720p/1080p at 30 fps).
        open_capture: builds the `cv2.VideoCapture` for `device`; default `open_camera`.
    """

    kind = "webcam"

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = 1280,
        height: int | None = 720,
        fps: float | None = None,
        fourcc: str | None = None,
        mirror: bool = False,
        open_capture: Callable[[int | str], cv2.VideoCapture] = open_camera,
        **retry: float,
    ) -> None:
        super().__init__(fps=None, mirror=mirror, **retry)
        if fourcc is not None and len(fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters like MJPG or YUYV, got {fourcc!r}")
        if fps is not None and not fps > 0:
            raise ConfigError(f"camera fps must be > 0, got {fps!r}")
        self.device, self.fourcc = device, fourcc
        self.requested = (width, height, fps)
        self._open_capture = open_capture
        self._cap: cv2.VideoCapture | None = None
        self.size: tuple[int, int] | None = None  # (width, height) the driver gave
        self.driver_fps = 0.0

    def _open(self) -> None:
        try:
            self._connect()
        except DeviceError as e:
            present = present_cameras()
            have = f"cameras present: {', '.join(present)}" if present else "no camera device nodes found"
            if not sys.platform.startswith("linux"):
                have = "cameras are numbered from 0"
            if sys.platform == "darwin":  # OpenCV's AVFoundation capture fails until access is granted
                have += ("; macOS lets a terminal use the camera only once allowed: System Settings -> "
                         "Privacy & Security -> Camera, tick your terminal app and start it again")
            raise DeviceError(f"{e}; {have} (list what opens with `dreamcam devices`)") from e

    def _reopen(self) -> None:
        self._connect()

    def check(self) -> None:
        node = self.device
        if isinstance(node, int) and self._open_capture is open_camera and sys.platform.startswith("linux"):
            node = f"/dev/video{node}"  # V4L2 opens camera N as this node
        if isinstance(node, str) and node.startswith("/dev/") and not os.path.exists(node):
            self._open()  # raises start()'s line (with the cameras present) without opening any

    def _connect(self) -> None:
        if isinstance(self.device, str) and self.device.startswith("/dev/") and not os.path.exists(self.device):
            raise DeviceError(f"camera {self.device} does not exist")
        with quiet_opencv():
            cap = self._open_capture(self.device)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise DeviceError(f"camera {self.device} did not open")
        width, height, fps = self.requested
        if self.fourcc:  # before the size: many drivers offer large sizes only in MJPG
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if width and height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a driver queue
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.driver_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        log.info("camera %s: %sx%s at %.1f fps (asked %s)", self.device, *self.size, self.driver_fps, self.requested)
        self._cap = cap

    def _grab(self) -> np.ndarray:
        cap = self._cap
        if cap is None:
            raise SignalLost("camera not open")
        try:
            ok, image = cap.read()
        except cv2.error as e:
            raise SignalLost(f"read error: {e}") from e
        if not ok or image is None:
            raise SignalLost(f"camera {self.device} gave no frame")
        return to_rgb(image)

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
