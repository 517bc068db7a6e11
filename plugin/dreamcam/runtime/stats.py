"""Live statistics: rates and percentiles over recent frames, and the exit summary."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import numpy as np

STALE_AFTER_S = 1.0  # with no event for this long (and 3 mean intervals), a rate reads 0


def percentile(values, q: float) -> float:
    return float(np.percentile(np.fromiter(values, dtype=np.float64), q)) if len(values) else 0.0


def recent_rate(times: Sequence[float], now: float | None = None) -> float:
    """Events per second over `times` (ascending `time.perf_counter()` seconds), or 0 once the
    newest is stale (older than 3 mean intervals and at least STALE_AFTER_S): a source or engine
    that stopped reads 0 fps, not the rate it had before it stopped."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    interval = (times[-1] - times[0]) / (len(times) - 1)
    now = time.perf_counter() if now is None else now
    if now - times[-1] > max(STALE_AFTER_S, 3 * interval):
        return 0.0
    return 1.0 / interval


class RateMeter:
    """Events per second over the last `window` events (0 once they stop: `recent_rate`)."""

    def __init__(self, window: int = 60) -> None:
        self._t: deque[float] = deque(maxlen=window)

    def tick(self, t: float | None = None) -> None:
        self._t.append(time.perf_counter() if t is None else t)

    @property
    def rate(self) -> float:
        return recent_rate(self._t)


class RunStats:
    """What the runner measures. Times in milliseconds, rates in frames per second."""

    def __init__(self) -> None:
        self.frames = 0  # frames the engine turned out
        self.repeats = 0  # frames re-sent while the source gave nothing (last good / no signal)
        self.skipped_similar = 0  # frames the similarity filter answered with the last output
        self.engine_ms: deque[float] = deque(maxlen=2000)
        self.latency_ms: deque[float] = deque(maxlen=2000)
        self.out_rate = RateMeter()
        self.t_first: float | None = None
        self.t_last: float | None = None

    def record(self, engine_ms: float | None, t_capture: float, t_out: float) -> None:
        """One frame out. `engine_ms` None: the model did not run for it (bypass, similarity skip),
        so it counts in frames, fps and latency but not in the frame-ms percentiles."""
        self.frames += 1
        if engine_ms is not None:
            self.engine_ms.append(engine_ms)
        self.latency_ms.append((t_out - t_capture) * 1000.0)
        self.out_rate.tick(t_out)
        if self.t_first is None:
            self.t_first = t_out
        self.t_last = t_out

    @property
    def fps(self) -> float:
        """Average output rate since the first frame."""
        if self.t_first is None or self.t_last is None or self.frames < 2 or self.t_last <= self.t_first:
            return 0.0
        return (self.frames - 1) / (self.t_last - self.t_first)

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "fps": round(self.fps, 3),
            "p50_ms": round(percentile(self.engine_ms, 50), 3),
            "p99_ms": round(percentile(self.engine_ms, 99), 3),
            "latency_p50_ms": round(percentile(self.latency_ms, 50), 3),
            "latency_p99_ms": round(percentile(self.latency_ms, 99), 3),
            "repeated_frames": self.repeats,
            "skipped_similar": self.skipped_similar,
        }
