"""The flicker meter: how much the output changes from frame to frame beyond what the input's
motion explains, measured off the frame path in a thread of its own.

The figure is the *warping error* of the video-consistency literature (Lai et al., "Learning
Blind Video Temporal Consistency", ECCV 2018): the previous output is moved along the motion of
the input and compared with the current output; what still differs is flicker.

For two consecutive engine frames k-1 and k (input and output each):

1. Both inputs are framed to the measure size (the engine size scaled so its longer side is at
   most `MEASURE_SIDE` pixels) and turned grey; DIS optical flow (OpenCV,
   `cv2.DISOpticalFlow_create`, preset FAST) gives the backward flow (frame k -> k-1) and the
   forward flow (k-1 -> k).
2. A pixel is *occluded* where the two flows disagree (the forward-backward check of Lai et al.
   and Ruder et al.: |b + f(x + b)|^2 > 0.01 (|b|^2 + |f(x + b)|^2) + 0.5, flows in pixels at
   the measure size) or where its source falls outside the frame; only the other pixels count.
   Where the camera holds still, the flow is taken as zero (the *still rule*): in each
   `STILL_BLOCK` x `STILL_BLOCK` neighbourhood whose mean backward flow is under `STILL_PX`
   pixels and whose input the zero motion explains about as well as the flow does (mean
   |k - (k-1)| at most `STILL_TOL` times the flow's mean error, plus `STILL_SLACK` grey levels).
   On a still, noisy camera DIS flow is sub-pixel noise: warping along it resamples the output
   and adds a floor of about half the flicker a steady model leaves (0.2 grey levels on the toy
   model with noise 8, measured; docs/flicker.md). Real motion keeps its flow: a pan of a pixel
   a frame or more moves the blocks' means past the threshold, and slower motion is taken as
   still only where zero motion explains the input (flat areas), never on a moving edge or texture.
3. Output k-1 is warped to frame k (`cv2.remap`, bilinear, along the backward flow) and
   compared with output k: the mean absolute difference over the non-occluded pixels and the
   three RGB channels, in **grey levels (0..255)**. That is `flicker`.
4. The same warp applied to the input frames gives the input's own warping error: sensor noise,
   light changes, flow failures. `flicker_rel = flicker / max(input error, REL_FLOOR)`. Near 1:
   the output changes as much as the camera picture does; well above 1: the model adds flicker;
   below 1: the output is steadier than the camera (it smooths sensor noise away).

A pair whose input warping error exceeds `CUT_GREY`, or with fewer than `MIN_VALID` of its
pixels non-occluded, is a scene cut (or a flow failure): it is counted, not measured.

The live figures are over the last `WINDOW_S` seconds of samples; a run's summary is over all of
them. Where there is no figure (before the first pair, in bypass, when samples stopped coming)
the figure is None, never 0.

Cost on the frame path: `FlickerMeter.add` keeps references to the frame pair and, when a sample
is due (`rate` per second), puts it into a newest-only `LatestSlot`: a slow meter drops samples,
the loop never waits for it (about 1 microsecond a frame). The meter's thread does the work: about
8 ms of CPU per sample at a 512x512 engine size with a 1280x720 camera (docs/flicker.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from dreamcam.frames import LatestSlot, fit, resize

log = logging.getLogger(__name__)

MEASURE_SIDE = 256  # the longer side of the images the meter works on, pixels
CUT_GREY = 25.0  # an input warping error above this (grey levels) is a scene cut, not measured
MIN_VALID = 0.3  # fewer non-occluded pixels than this fraction: a cut or a flow failure
REL_FLOOR = 0.5  # grey levels: the smallest input error flicker_rel divides by (a noiseless input)
WINDOW_S = 2.0  # the live figures average the samples of the last this many seconds ...
WINDOW_MIN = 3  # ... or the last this many, where samples come slower (a slow engine)
STALE_S = 3.0  # with no sample for this long (and 3 sample intervals) the live figure is None again
DEFAULT_RATE = 10.0  # samples per second in `dreamcam run`
SUM_XY = np.float32([[1.0, 1.0]])  # cv2.transform matrix: x + y of a two-channel image
# the still rule (step 2 of the module docstring): a neighbourhood of this many pixels a side
# (at the measure size) counts as still when its mean flow is under STILL_PX pixels and zero
# motion explains its input within STILL_TOL times (+ STILL_SLACK grey levels) the flow's error
# (DIS fits a little of the noise: its error on a still noisy camera is 5-10% below zero motion's)
STILL_BLOCK = 31
STILL_PX = 0.8
STILL_TOL = 1.3
STILL_SLACK = 0.25


def measure_size(width: int, height: int, side: int = MEASURE_SIDE) -> tuple[int, int]:
    """The (w, h) the meter works at: the engine size, scaled down so the longer side is at most `side`."""
    s = min(1.0, side / max(width, height))
    return max(16, round(width * s)), max(16, round(height * s))


@dataclass(frozen=True)
class Warp:
    """Where each pixel of frame k comes from in frame k-1 (`map`: float32 (H, W, 2), x and y in
    pixels) and which pixels count (`mask`: uint8 (H, W), 255 where not occluded and inside the frame)."""

    map: np.ndarray
    mask: np.ndarray

    @property
    def valid_fraction(self) -> float:
        return cv2.countNonZero(self.mask) / self.mask.size

    def error(self, prev: np.ndarray, cur: np.ndarray) -> float:
        """Mean absolute difference (grey levels) between `cur` and `prev` warped to it, over the
        valid pixels and all channels (uint8 (H, W) or (H, W, C), C <= 4); nan where no pixel is valid."""
        if not cv2.countNonZero(self.mask):
            return math.nan
        # in float: a warped image rounded to whole grey levels would add its rounding to the figure
        warped = cv2.remap(prev.astype(np.float32), self.map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        channels = 1 if cur.ndim == 2 else cur.shape[2]
        return float(np.mean(cv2.mean(cv2.absdiff(warped, cur.astype(np.float32)), mask=self.mask)[:channels]))


class FlowWarp:
    """DIS optical flow between two grey frames and the warp it gives (one per thread: the
    OpenCV flow object keeps state)."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> None:
        self._dis = cv2.DISOpticalFlow_create(preset)
        self._grid: np.ndarray | None = None

    def between(self, prev_grey: np.ndarray, cur_grey: np.ndarray) -> Warp:
        """The warp from frame k-1 (`prev_grey`) to frame k (`cur_grey`), uint8 (H, W)."""
        h, w = cur_grey.shape
        if self._grid is None or self._grid.shape[:2] != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.dstack([gx, gy])
        back = self._dis.calc(cur_grey, prev_grey, None)  # cur(x) ~ prev(x + back(x))
        fwd = self._dis.calc(prev_grey, cur_grey, None)  # prev(y) ~ cur(y + fwd(y))
        where = cv2.add(self._grid, back)
        fwd_at = cv2.remap(fwd, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # consistent: |b + f|^2 - 0.01 (|b|^2 + |f|^2) <= 0.5, per channel then summed over x and y
        both = back + fwd_at
        excess = cv2.transform(both * both - 0.01 * (back * back + fwd_at * fwd_at), SUM_XY)
        consistent = cv2.compare(excess, 0.5, cv2.CMP_LE)
        inside = cv2.inRange(where, (0.0, 0.0), (w - 1.0, h - 1.0))
        mask = cv2.bitwise_and(inside, consistent)
        still = self._still(prev_grey, cur_grey, back, where)
        if still is not None:
            cv2.copyTo(self._grid, still, where)  # zero motion: output k-1 is compared as it is
            mask = cv2.bitwise_or(mask, still)  # zero motion is consistent and never leaves the frame
        return Warp(where, mask)

    def _still(self, prev_grey: np.ndarray, cur_grey: np.ndarray, back: np.ndarray, where: np.ndarray) -> np.ndarray | None:
        """uint8 (H, W), 255 where the still rule takes the pixel as not moving; None where there are none."""
        k = (STILL_BLOCK, STILL_BLOCK)
        mean = cv2.blur(back, k)
        small = cv2.compare(cv2.transform(mean * mean, SUM_XY), STILL_PX * STILL_PX, cv2.CMP_LT)
        if not cv2.countNonZero(small):
            return None
        prev_f, cur_f = prev_grey.astype(np.float32), cur_grey.astype(np.float32)
        flow_err = cv2.absdiff(cv2.remap(prev_f, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), cur_f)
        zero_err = cv2.absdiff(prev_f, cur_f)
        explained = cv2.compare(cv2.blur(zero_err, k), STILL_TOL * cv2.blur(flow_err, k) + STILL_SLACK, cv2.CMP_LE)
        return cv2.bitwise_and(small, explained)


@dataclass(frozen=True)
class Sample:
    """One measured pair: frame indices, output and input warping error (grey levels), the
    fraction of pixels that counted, whether it was a cut, and the CPU milliseconds it took."""

    index: int  # frame k (the pair is k-1, k)
    prev_index: int
    flicker: float
    input_error: float
    valid: float
    cut: bool
    ms: float
    t: float  # time.perf_counter() when measured
    gen: int = 0  # the meter's live-window generation (FlickerMeter.gap(reset=True) starts a new one)

    @property
    def flicker_rel(self) -> float:
        return self.flicker / max(self.input_error, REL_FLOOR)


def relative(out_sum: float, in_sum: float, n: int) -> float:
    """flicker_rel of n samples: the output error over the input error (each floored at REL_FLOOR)."""
    return out_sum / max(in_sum, REL_FLOOR * n)


def measure_pair(warp: FlowWarp, in_prev: np.ndarray, in_cur: np.ndarray, out_prev: np.ndarray,
                 out_cur: np.ndarray) -> tuple[float, float, float]:
    """(output error, input error, valid fraction) of one pair of frames at the measure size
    (uint8 RGB, all four the same shape)."""
    grey_prev = cv2.cvtColor(in_prev, cv2.COLOR_RGB2GRAY)
    grey_cur = cv2.cvtColor(in_cur, cv2.COLOR_RGB2GRAY)
    w = warp.between(grey_prev, grey_cur)
    return w.error(out_prev, out_cur), w.error(in_prev, in_cur), w.valid_fraction


def flicker_text(flicker: float | None, flicker_rel: float | None) -> str:
    """How the status line and the preview say the figure: 'flicker 3.1 (0.8x input)' or 'flicker -'."""
    if flicker is None:
        return "flicker -"
    rel = f" ({flicker_rel:.2f}x input)" if flicker_rel is not None else ""
    return f"flicker {flicker:.1f}{rel}"


class FlickerMeter:
    """Measures flicker of (input, output) frame pairs in a background thread.

    Args:
        width, height: the engine size (outputs are this size; inputs are framed to it).
        fit_mode: how inputs of another size are framed (as the runner frames them).
        rate: samples per second handed to the thread at most (None or inf: every frame pair).
        side: the longer side of the measure size (`MEASURE_SIDE`).
        window_s: the live figures' window in seconds.

    The loop calls `add(input, output, index)` for every engine frame and `gap()` where the
    chain of frames breaks (bypass); `reading()` is the live figure, `summary()` the run's.
    Use as a context manager (the thread runs inside it).
    """

    def __init__(self, width: int, height: int, *, fit_mode: str = "crop", rate: float | None = DEFAULT_RATE,
                 side: int = MEASURE_SIDE, window_s: float = WINDOW_S) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 samples per second (None: every frame), got {rate!r}")
        self.width, self.height, self.fit_mode = width, height, fit_mode
        self.size = measure_size(width, height, side)
        self._period = 0.0 if rate is None or math.isinf(rate) else 1.0 / rate
        self.window_s = window_s
        self._slot = LatestSlot(1)
        self._prev: tuple | None = None
        self._due = 0.0
        self._gen = 0  # bumped by gap(reset=True): samples of an older generation leave the live window
        # guards the counts and sums below; notified each time the thread is done with a pair, so
        # flush() waits on the counts (an empty slot does not say the thread is done: it may have
        # taken the pair and not started on it)
        self._lock = threading.Condition()
        self._recent: deque[Sample] = deque(maxlen=256)
        self._thread: threading.Thread | None = None
        self.offered = 0  # pairs handed to the thread
        self.samples = 0  # pairs measured (cuts included)
        self.cuts = 0
        self.errors = 0  # pairs the measurement failed on (logged once, counted in flicker_errors)
        self._sum_out = self._sum_in = self._sum_ms = 0.0
        self._n = 0  # measured pairs that were not cuts

    # ------------------------------------------------------------------ the frame path (loop thread)

    def add(self, image: np.ndarray, output: np.ndarray, index: int) -> None:
        """Engine frame `index`: its input (any size, framed with fit_mode) and output (the engine
        size), uint8 RGB. Keeps references only (neither is written to afterwards); hands the pair
        (previous frame, this frame) to the thread when a sample is due. Never blocks."""
        now = time.perf_counter()
        prev, cur = self._prev, (image, output, index)
        self._prev = cur
        if prev is not None and now >= self._due:
            self._due = now + self._period
            self.offered += 1
            self._slot.put((self._gen, prev, cur))

    def gap(self, *, reset: bool = False) -> None:
        """The next frame does not follow the last one (bypass, a restart): no pair across it.
        reset: the live figure starts over too (bypass: there is no figure while it lasts)."""
        self._prev = None
        if reset:
            with self._lock:
                self._gen += 1

    @property
    def dropped(self) -> int:
        """Pairs replaced unmeasured by a newer one (the thread was busy)."""
        return self._slot.dropped

    # ------------------------------------------------------------------ readings (any thread)

    def reading(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(flicker, flicker_rel) over the samples of the last `window_s` seconds (at least the last
        WINDOW_MIN); (None, None) where there is none: the first frames, after a reset, a run of
        cuts, or no sample for STALE_S seconds (and 3 sample intervals)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            gen = [s for s in self._recent if s.gen == self._gen]
        if not gen:
            return None, None
        interval = (gen[-1].t - gen[0].t) / (len(gen) - 1) if len(gen) > 1 else 0.0
        if now - gen[-1].t > max(STALE_S, 3 * interval):
            return None, None
        recent = [s for i, s in enumerate(gen) if (s.t >= now - self.window_s or i >= len(gen) - WINDOW_MIN) and not s.cut]
        if not recent:
            return None, None
        out = sum(s.flicker for s in recent)
        return round(out / len(recent), 2), round(relative(out, sum(s.input_error for s in recent), len(recent)), 3)

    def summary(self) -> dict:
        """The whole run: flicker and flicker_rel (None without a measured pair), flicker_samples
        (pairs measured, cuts left out), flicker_cuts, flicker_dropped (pairs the busy thread
        skipped), flicker_errors (pairs the measurement failed on) and flicker_ms (mean
        milliseconds the thread spent on a pair)."""
        with self._lock:
            n, out, inp, ms = self._n, self._sum_out, self._sum_in, self._sum_ms
            total = self.samples
        return {
            "flicker": round(out / n, 3) if n else None,
            "flicker_rel": round(relative(out, inp, n), 4) if n else None,
            "flicker_samples": n,
            "flicker_cuts": self.cuts,
            "flicker_dropped": self.dropped,
            "flicker_errors": self.errors,
            "flicker_ms": round(ms / total, 3) if total else None,
        }

    def history(self) -> list[Sample]:
        """The last measured samples (at most 256), oldest first, cuts included."""
        with self._lock:
            return list(self._recent)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` s) until every pair handed over is measured, failed or dropped
        for a newer one; True when it is (False on timeout, or when the thread is not running)."""
        end = time.perf_counter() + timeout
        with self._lock:
            while self.samples + self.errors + self.dropped < self.offered:
                left = end - time.perf_counter()
                if self._thread is None or not self._thread.is_alive() or left <= 0:
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    # ------------------------------------------------------------------ the thread

    def start(self) -> FlickerMeter:
        self._thread = threading.Thread(target=self._run, name="dreamcam-flicker", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> FlickerMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        warp = FlowWarp()
        while True:
            item = self._slot.get(timeout=0.5)
            if item is None:
                if self._slot.closed and not len(self._slot):
                    return
                continue
            try:
                self._measure(warp, *item)
            except Exception as e:  # noqa: BLE001 - a failed sample must not end the meter
                with self._lock:
                    self.errors += 1
                    self._lock.notify_all()
                if self.errors == 1:
                    log.warning("flicker meter: a sample failed (%s: %s); further failures are only counted",
                                type(e).__name__, e)

    def _measure(self, warp: FlowWarp, gen: int, prev: tuple, cur: tuple) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        mw, mh = self.size
        in_prev, in_cur = (fit(f[0], mw, mh, self.fit_mode) for f in (prev, cur))
        out_prev, out_cur = (resize(f[1], mw, mh) for f in (prev, cur))
        out_err, in_err, valid = measure_pair(warp, in_prev, in_cur, out_prev, out_cur)
        cut = not (in_err <= CUT_GREY and valid >= MIN_VALID)  # nan (nothing valid) is a cut too
        ms = (time.thread_time() - c0) * 1000.0
        sample = Sample(cur[2], prev[2], out_err, in_err, valid, cut, ms, time.perf_counter(), gen)
        log.debug("flicker sample %d: %.2f / input %.2f (valid %.2f) in %.1f ms (wall %.1f)",
                  cur[2], out_err, in_err, valid, ms, (time.perf_counter() - t0) * 1000.0)
        with self._lock:  # the last step: a pair is either counted here or in errors, never both
            self.samples += 1
            self._sum_ms += ms
            if cut:
                self.cuts += 1
            else:
                self._n += 1
                self._sum_out += out_err
                self._sum_in += in_err
            self._recent.append(sample)
            self._lock.notify_all()
