"""Frames and the hand-over between threads.

A `Frame` is an RGB uint8 image (H, W, 3) with the time it was captured
(`time.perf_counter()` seconds). Stages hand frames over through a `LatestSlot`, which keeps
only the newest: a slow consumer skips frames (counted as dropped), it never builds a queue.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from dreamcam.errors import ConfigError

FIT_MODES = ("crop", "letterbox", "stretch")


@dataclass
class Frame:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    t_capture: float = field(default_factory=time.perf_counter)
    index: int = 0


class LatestSlot:
    """A hand-over that keeps the newest `depth` items (1 for live stages).

    `put` never blocks; an item pushed out unread counts in `dropped`. `get` waits for an item
    until `timeout` or `close()`.
    """

    def __init__(self, depth: int = 1) -> None:
        self._items: deque = deque()
        self._depth = depth
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: object) -> None:
        with self._cond:
            if len(self._items) >= self._depth:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        """The oldest kept item, or None on timeout / when closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def check_fit_mode(mode: str, what: str = "framing") -> str:
    """`mode` if it is one of FIT_MODES, else a ConfigError that names them (`what`: the option's
    name as the user wrote it, e.g. "fit" for a sink's ?fit=)."""
    if mode not in FIT_MODES:
        raise ConfigError(f"{what} must be one of {', '.join(FIT_MODES)}; got {mode!r}")
    return mode


@dataclass(frozen=True)
class Placement:
    """Where framing puts a w x h image in a width x height output: the source region it takes
    (x, y, w, h), resized to `size` (w, h) and placed at `offset` (x, y); the rest is black."""

    source: tuple[int, int, int, int]
    size: tuple[int, int]
    offset: tuple[int, int]


def placement(w: int, h: int, width: int, height: int, mode: str) -> Placement:
    """The geometry of framing a w x h image to width x height (every framing uses this one).

    crop: scale to cover, then cut the centre (the source region is cut first, so a resize
    touches only the pixels that are kept); letterbox: scale to fit, centred, black bars;
    stretch: scale each axis independently.
    """
    check_fit_mode(mode)
    if mode == "stretch":
        return Placement((0, 0, w, h), (width, height), (0, 0))
    if mode == "crop":
        scale = max(width / w, height / h)
        cw, ch = min(w, round(width / scale)), min(h, round(height / scale))
        return Placement(((w - cw) // 2, (h - ch) // 2, cw, ch), (width, height), (0, 0))
    scale = min(width / w, height / h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    return Placement((0, 0, w, h), (sw, sh), ((width - sw) // 2, (height - sh) // 2))


def fit(image: np.ndarray, width: int, height: int, mode: str = "crop") -> np.ndarray:
    """Frame an (H, W, 3) uint8 image to (height, width, 3) (`placement` says where each pixel goes).

    crop: scale to cover, then cut the centre; letterbox: scale to fit, pad with black;
    stretch: scale each axis independently.
    """
    check_fit_mode(mode)
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    p = placement(w, h, width, height, mode)
    x, y, cw, ch = p.source
    # cutting first (crop) makes 1280x720 -> 512x512 1.0 ms instead of 1.9 ms
    scaled = resize(image[y : y + ch, x : x + cw], *p.size)
    if p.size == (width, height):
        return np.ascontiguousarray(scaled)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    (x0, y0), (sw, sh) = p.offset, p.size
    out[y0 : y0 + sh, x0 : x0 + sw] = scaled
    return out


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 to (height, width, 3): area-filtered whole-number shrink, then bilinear."""
    # INTER_AREA (the anti-aliased shrink) is fast only for whole-number ratios on both axes
    # (0.4 ms for 1280x720 -> 640x360, 20-35 ms for -> 910x512 on one core): shrink by the
    # largest whole factor that divides both sides with it, and finish with INTER_LINEAR
    h, w = image.shape[:2]
    k = min(w // width, h // height)
    if k >= 2:
        g = math.gcd(w, h)
        k = max(d for d in range(1, k + 1) if g % d == 0)
        if k >= 2:
            image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
