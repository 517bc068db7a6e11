"""Outputs. Each sink runs in its own named thread fed through a newest-only hand-over.

`open_sink(spec, ...)` parses a `--sink` value. Every sink:

- `start()` opens the output (errors at open are DreamcamError);
- `write(frame)` never blocks: the frame replaces any the sink has not taken yet (counted in
  `dropped`); a recorder keeps a short buffer instead, so a recording has every frame;
- `latencies_ms`: capture-to-written time of recent frames (glass-to-glass, as far as the
  process can see); `close()` writes what is buffered, then releases (idempotent).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame, LatestSlot

log = logging.getLogger(__name__)


class Sink:
    kind = "sink"
    depth = 1  # frames buffered between the engine and this sink

    def __init__(self, width: int, height: int, fps: float = 30.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._slot = LatestSlot(self.depth)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.written = 0
        self.latencies_ms: deque[float] = deque(maxlen=600)
        self.error: BaseException | None = None

    def _open(self) -> None:
        pass

    def _send(self, frame: Frame) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def start(self) -> Sink:
        self._open()
        self._thread = threading.Thread(target=self._loop, name=f"dreamcam-sink-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            frame = self._slot.get(timeout=0.1)
            if frame is None:
                if self._slot.closed:
                    return
                continue
            try:
                self._send(frame)
            except Exception as e:  # a failing output is reported, the others keep running
                if self.error is None:
                    log.error("%s sink failed: %s", self.kind, e)
                self.error = e
                continue
            self.written += 1
            self.latencies_ms.append((time.perf_counter() - frame.t_capture) * 1000.0)

    def write(self, frame: Frame) -> None:
        self._slot.put(frame)

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._release()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink(Sink):
    """Discards frames (benchmarks, dry runs)."""

    kind = "null"

    def _send(self, frame: Frame) -> None:
        pass


class FileSink(Sink):
    """Records an mp4 (MPEG-4 Part 2 through OpenCV) at the output size and fps."""

    kind = "file"
    depth = 64

    def __init__(self, path: str, width: int, height: int, fps: float = 30.0) -> None:
        super().__init__(width, height, fps)
        self.path = path
        self._writer: cv2.VideoWriter | None = None

    def _open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise DeviceError(f"cannot record to {self.path}: folder {folder} does not exist")
        writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (self.width, self.height))
        if not writer.isOpened():
            raise DeviceError(f"cannot record to {self.path}: OpenCV could not open an mp4 writer there")
        self._writer = writer

    def _send(self, frame: Frame) -> None:
        img = frame.image
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def open_sink(spec: str, *, width: int, height: int, fps: float = 30.0) -> Sink:
    """Build (not start) the sink a `--sink` value names; width/height: the output frame size."""
    kind, _, arg = spec.partition(":")
    if kind == "null":
        return NullSink(width, height, fps)
    if kind == "file":
        if not arg:
            raise ConfigError("file sink needs a path: --sink file:out.mp4")
        return FileSink(arg, width, height, fps)
    raise ConfigError(f"unknown sink {spec!r}; use virtualcam[:BACKEND], udp://HOST:PORT, file:PATH, preview or null")


def frame_of(image: np.ndarray, like: Frame) -> Frame:
    """A new frame carrying `like`'s capture time and index."""
    return Frame(image, like.t_capture, like.index)
