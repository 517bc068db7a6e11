"""The sink contract (`Sink`), the framer every sized output uses, the null sink, and the size
and bitrate parsers the `--sink` specs and the CLI share. The contract itself is described in
`dreamcam.sinks`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from dreamcam.errors import ConfigError
from dreamcam.frames import Frame, LatestSlot, check_fit_mode, fit, placement, resize

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 10.0  # how long close() waits for the thread to send what is buffered and release


class Sink:
    """Base: a thread taking frames from a `LatestSlot` and calling `_send(frame)` on each.

    The thread owns the output from `start()` on: it sends, and it releases the output
    (`_release`) as it leaves its loop, so a release never frees what a send still uses.

    Args:
        width, height: output frame size in pixels.
        fps: output rate in frames/s (> 0); live sinks send at most this many frames/s.
    """

    kind = "sink"
    depth = 1  # frames buffered between the engine and this sink
    paced = False  # True: at most `fps` frames per second
    recovers = False  # True: the sink re-opens itself after a failure; `error` clears when it works again
    poll_s = 0.1  # how often the thread looks for close() while no frame comes
    close_wait_s = CLOSE_WAIT_S  # close() returns after this long even if a send still blocks

    def __init__(self, width: int, height: int, fps: float = 30.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._slot = LatestSlot(self.depth)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.written = 0
        self.latencies_ms: deque[float] = deque(maxlen=600)
        self.error: BaseException | None = None  # the first failure (None again once a `recovers` sink works)
        self.outages = 0  # failures a `recovers` sink came back from

    # subclasses: open the output (raise DreamcamError), send one frame, release
    def _open(self) -> None:
        pass

    def _send(self, frame: Frame) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _idle(self) -> None:
        """Called from the sink's thread when no frame came within `poll_s` seconds."""

    def start(self) -> Sink:
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"dreamcam-sink-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # here, not in close(): only this thread knows that no send is running
            self._release_reporting()

    def _loop(self) -> None:
        period = 1.0 / self.fps if self.paced else 0.0
        next_due = 0.0
        while True:
            wait = next_due - time.perf_counter()
            if wait > 0:
                self._closing.wait(wait)  # frames written meanwhile replace each other in the slot
            frame = self._slot.get(timeout=self.poll_s)
            if frame is None:
                if self._slot.closed:
                    return
                self._idle()
                continue
            # on a schedule of 1/fps ticks, so a late wake-up does not lower the rate; never two
            # frames closer than half a tick
            next_due = max(next_due + period, time.perf_counter() + period / 2)
            try:
                self._send(frame)
            except Exception as e:  # a failing output is reported, the others keep running
                if self.error is None:
                    if self.recovers:
                        log.warning("%s sink failed: %s; it re-opens itself until it works", self.kind, e)
                    else:
                        log.error("%s sink failed: %s", self.kind, e)
                    self.error = e
                continue
            self.written += 1
            self.latencies_ms.append((time.perf_counter() - frame.t_capture) * 1000.0)
            if self.error is not None and self.recovers:  # back after an outage: not a failure at exit
                log.warning("%s sink works again", self.kind)
                self.error = None
                self.outages += 1

    def _release_reporting(self) -> None:
        try:
            self._release()
        except Exception as e:  # e.g. the disk filled up: finishing the file fails like a frame did
            if self.error is None:
                log.error("%s sink failed while closing: %s", self.kind, e)
                self.error = e

    def write(self, frame: Frame) -> None:
        self._slot.put(frame)

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def close(self) -> None:
        """Send what is buffered, then release; idempotent, never raises (failures go to `error`).

        Waits at most `close_wait_s` seconds: a send still blocked then (a stuck driver or
        network) is left to finish in the sink's thread, which releases the output when it
        returns, so nothing a send uses is freed under it.
        """
        if self._closing.is_set():
            return
        self._closing.set()
        self._slot.close()
        thread = self._thread
        if thread is None:  # never started: no thread to release the output
            self._release_reporting()
            return
        if thread is threading.current_thread():  # closed from its own send: it releases as it leaves
            return
        thread.join(timeout=self.close_wait_s)
        if thread.is_alive():
            log.warning("%s sink still busy sending after %.3g s; going on without it: it releases the "
                        "output when that send returns", self.kind, self.close_wait_s)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Framer:
    """Frames images to (height, width, 3) into one reused buffer; same pixels as `frames.fit`.

    letterbox (scale to fit, black bars) and stretch write into the buffer, so the result is
    valid until the next call; crop and same-size images go through `fit` (same-size: returned
    as is). Resizing is `frames.resize`, as in `fit`.
    """

    def __init__(self, width: int, height: int, mode: str = "letterbox") -> None:
        self.width, self.height, self.mode = width, height, check_fit_mode(mode)
        self._buf = np.zeros((height, width, 3), dtype=np.uint8)
        self._src_hw: tuple[int, int] | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (h, w) == (self.height, self.width) or self.mode == "crop":
            return fit(image, self.width, self.height, self.mode)
        if (h, w) != self._src_hw:
            self._src_hw = (h, w)
            p = placement(w, h, self.width, self.height, self.mode)  # letterbox, stretch: the whole source
            (x0, y0), (sw, sh) = p.offset, p.size
            self._buf[:] = 0
            self._dst = self._buf[y0 : y0 + sh, x0 : x0 + sw]
            self._size = (sw, sh)
        self._dst[...] = resize(image, *self._size)  # the same filter as `fit`, so the same pixels
        return self._buf


class NullSink(Sink):
    """Discards frames (benchmarks, dry runs)."""

    kind = "null"

    def _send(self, frame: Frame) -> None:
        pass


def parse_size(text: str, what: str = "--output-size", *, video: bool = True) -> tuple[int, int]:
    """"1280x720" -> (1280, 720), in pixels.

    video=True (an output): even numbers in 16..8192, what video encoders and virtual cameras
    take; video=False (a size asked of a camera): any positive numbers. `what` names the flag
    or option in the message.
    """
    w, sep, h = (part.strip() for part in text.lower().partition("x"))
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ConfigError(f"{what} takes WIDTHxHEIGHT in pixels, e.g. 1280x720; got {text!r}")
    width, height = int(w), int(h)
    if video and (not (16 <= width <= 8192 and 16 <= height <= 8192) or width % 2 or height % 2):
        raise ConfigError(f"{what} must be even numbers in 16..8192 (video encoders need even sizes); got {width}x{height}")
    return width, height


def parse_bitrate(text: str | int) -> int:
    """"4M", "2500k" or 4000000 -> bits/s, 100 kbit/s .. 100 Mbit/s."""
    s = str(text).strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(s[-1:], 1)
    try:
        value = round(float(s[:-1] if mult > 1 else s) * mult)
    except ValueError as e:
        raise ConfigError(f"bitrate takes bits/s like 4M or 2500k; got {text!r}") from e
    if not 100_000 <= value <= 100_000_000:
        raise ConfigError(f"bitrate must be 100k..100M bits/s; got {text!r}")
    return value
