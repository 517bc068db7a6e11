"""Wires source -> engine -> sinks. The engine loop runs on the calling thread.

    source thread --newest frame--> [this loop: controls, framing, backend] --newest frame--> sink threads

The loop never queues: it takes the newest captured frame, applies pending parameter changes,
frames it to the engine size, runs the backend and hands the result to every sink. While the
source gives nothing, the sinks keep getting the last good frame, then a "no signal" card.

Two frame paths:

- synchronous: frame on the CPU (`frames.fit`), `backend.process`, emit. Used with bypass, with
  a similarity filter (both need the engine-size image on the CPU), for a backend that has only
  `process`, and where the backend does not overlap (eager, any CPU backend).
- pipelined (`submit` / `collect`, see backends.compiled.step.GraphedStep): the captured frame goes to the
  backend at its own size and is framed on the device. After submitting frame k the loop looks
  for a newer captured frame; if there is one, its parameters are applied and it is submitted
  before k is collected, so the host work on k+1 (copy into the pinned buffer, upload, framing)
  and, with `--parallel-frames`, its compute overlap the device's work on k. While the source
  outruns the engine the loop waits briefly for that frame (at most 1.5 input intervals); where
  the source sets the pace it does not wait, and k is collected at once: no latency is added.
  At most two frames are in flight and each is still the newest one captured when it was taken.

The loop hands the backend's `fence()` to `controller.apply(fence)`, which calls it before it
writes to the engine, so a parameter change never reaches a frame already running: it applies
from the next frame submitted. Frames with no change are not fenced: a fence makes the next
frame wait for the ones in flight (the default stream, where setters run, waits for the compute
streams, and each frame's stream waits for the default stream), which would undo the overlap.

Stats: engine_ms is, per frame, the wall time the backend held it: `process` in the synchronous
path; from `submit` to the end of `collect` in the pipelined path, which includes the time it
queued behind the frame ahead (so it can exceed 1000/fps; fps is the throughput). Frames the
model did not run for (bypass, similarity skip) count in frames, fps and latency, not in engine_ms.
The summary's `pipelined_frames` counts frames that took the pipelined path, `overlapped_frames`
those submitted while the frame ahead was still in flight.

Flicker: with a `dreamcam.runtime.flicker.FlickerMeter`, each engine frame's input and output go
to `meter.add` (references only; a due sample goes to the meter's thread through a newest-only
slot), so consecutive frames k-1, k are measured off the frame path. Bypassed frames break the
chain and clear the live figure; `status()` and the summary carry `flicker` and `flicker_rel`
(None where there is no figure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from dreamcam.backends import Backend
from dreamcam.engine.similarity import SimilarityFilter, image_key
from dreamcam.frames import Frame, fit
from dreamcam.runtime.flicker import FlickerMeter
from dreamcam.runtime.pace import engine_bound
from dreamcam.runtime.stats import RunStats

log = logging.getLogger(__name__)

IDLE_REPEAT_S = 0.1  # while the source is silent, re-send a frame this often
NO_SIGNAL_AFTER_S = 3.0


def no_signal_card(width: int, height: int, text: str = "NO SIGNAL") -> np.ndarray:
    img = np.full((height, width, 3), 24, dtype=np.uint8)
    scale = max(0.4, width / 480)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(img, text, ((width - tw) // 2, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 200, 200), 2)
    return img


class Runner:
    """The live loop.

    Args:
        source: a started `dreamcam.sources.Source`.
        backend: a `dreamcam.backends.Backend`: `process` for the synchronous path, `submit` /
            `collect` for the pipelined one, `fence` before parameter changes. (An object with
            `process` alone also runs, on the synchronous path: the tests' stand-ins.)
        sinks: started `dreamcam.sinks.Sink`s.
        width, height: the engine size frames are fitted to.
        controller: applies live parameters between frames (`apply()`, `bypass`).
        frames: stop after this many engine frames (0 = until `stop()`).
        fit_mode: crop, letterbox or stretch.
        on_status: called with `status()` about every `status_every` seconds.
        no_signal_after: seconds of silence from the source before the "no signal" card.
        similarity: a `dreamcam.engine.similarity.SimilarityFilter`: frames nearly identical to the last
            one processed skip the engine and repeat its output (None: every frame is processed).
        pipeline: use the backend's submit/collect: None (default) where it overlaps
            (`backend.overlaps`, the graphed backends on CUDA), True wherever it has them, False never.
        meter: a started `FlickerMeter` that measures the output's flicker (None: not measured).
    """

    def __init__(
        self,
        source: Any,
        backend: Backend,
        sinks: Sequence[Any],
        *,
        width: int,
        height: int,
        controller: Any = None,
        frames: int = 0,
        fit_mode: str = "crop",
        on_status: Callable[[dict], None] | None = None,
        status_every: float = 0.5,
        no_signal_after: float = NO_SIGNAL_AFTER_S,
        similarity: SimilarityFilter | None = None,
        pipeline: bool | None = None,
        meter: FlickerMeter | None = None,
    ) -> None:
        self.source, self.backend, self.sinks = source, backend, list(sinks)
        self.width, self.height = width, height
        self.controller = controller
        self.max_frames = frames
        self.fit_mode = fit_mode
        self.on_status = on_status
        self.status_every = status_every
        self.no_signal_after = no_signal_after
        self.similarity = similarity
        self.pipeline = pipeline
        self.meter = meter
        self.submitted = 0  # frames that took the pipelined path (submit / collect)
        self.overlapped = 0  # of those, frames submitted while the frame ahead was still in flight
        self._last_out: np.ndarray | None = None
        self.stats = RunStats()
        self._stop = threading.Event()
        self._no_signal: np.ndarray | None = None
        self._t_new = 0.0  # when the newest frame was taken from the source
        self._next_status = 0.0

    def stop(self) -> None:
        """Ask the loop to end after the current frame (safe from signal handlers and threads)."""
        self._stop.set()

    @property
    def bypass(self) -> bool:
        return bool(self.controller is not None and self.controller.bypass)

    def run(self) -> dict:
        last_out: np.ndarray | None = None
        self._t_new = time.perf_counter()
        self._next_status = self._t_new + self.status_every
        while not self._stop.is_set():
            frame = self.source.read(timeout=IDLE_REPEAT_S)
            now = time.perf_counter()
            self._between_frames()
            if frame is None:
                self._idle(last_out, now - self._t_new, now)
            else:
                self._t_new = now
                last_out = self._pipelined(frame) if self._use_submit() else self._process(frame)
                if self.max_frames and self.stats.frames >= self.max_frames:
                    break
            self._tick_status(now)
        return self.summary()

    def _between_frames(self) -> None:
        """Parameter changes, ordered after the frames in flight (they apply to the next one)."""
        if self.controller is not None:
            self.controller.apply(getattr(self.backend, "fence", None))

    def _tick_status(self, now: float) -> None:
        if self.on_status is not None and now >= self._next_status:
            self._next_status = now + self.status_every
            self.on_status(self.status())

    def _use_submit(self) -> bool:
        b = self.backend
        if self.bypass or self.similarity is not None or not (hasattr(b, "submit") and hasattr(b, "collect")):
            return False
        return bool(getattr(b, "overlaps", False)) if self.pipeline is None else self.pipeline

    def _process(self, frame: Frame) -> np.ndarray:
        img = fit(frame.image, self.width, self.height, self.fit_mode)
        engine_ms = None  # the model did not run: bypass or a similar frame
        if self.bypass:
            out = img
        elif self.similarity is not None and (again := self.similarity.repeat(image_key(img))) is not None:
            out = again
            self.stats.skipped_similar += 1
        else:
            t0 = time.perf_counter()
            out = self._last_out = self.backend.process(img)
            engine_ms = (time.perf_counter() - t0) * 1000.0
            if self.similarity is not None:
                self.similarity.keep(out)
        t1 = time.perf_counter()
        self._emit(Frame(out, frame.t_capture, frame.index))
        self.stats.record(engine_ms, frame.t_capture, t1)
        if self.meter is not None:
            if self.bypass:
                self.meter.gap(reset=True)
            else:
                self.meter.add(img, out, frame.index)
        return out

    def _pipelined(self, frame: Frame) -> np.ndarray:
        """Submit `frame`, and each newer frame the source already has before collecting the one
        ahead; returns the last output once the source has nothing newer (nothing left in flight)."""
        in_flight = deque([self._submit(frame)])
        out = self._last_out
        while in_flight:
            newer = self._newer(len(in_flight))
            later = None  # a frame for the synchronous path (bypass switched on), once k is out
            if newer is not None:
                self._between_frames()
                if self._use_submit():
                    in_flight.append(self._submit(newer))
                    self.overlapped += 1
                else:
                    later = newer
            out = self._collect(*in_flight.popleft())
            if later is not None:
                out = self._process(later)
            self._tick_status(time.perf_counter())
        return out

    def _newer(self, in_flight: int) -> Frame | None:
        """The source's newest frame; None when stopping or when the frames in flight already reach
        `frames`. Waits for one only while the engine sets the pace (`_wait_for_newer_s`)."""
        if self._stop.is_set() or (self.max_frames and self.stats.frames + in_flight >= self.max_frames):
            return None
        frame = self.source.read(timeout=0)
        if frame is None and (wait := self._wait_for_newer_s()) > 0:
            frame = self.source.read(timeout=wait)
        if frame is not None:
            self._t_new = time.perf_counter()
        return frame

    def _wait_for_newer_s(self) -> float:
        """How long to wait for the next captured frame before collecting the one in flight.

        0 unless the source outruns the engine (`pace.engine_bound`: input rate over 1.1 times the
        output rate, the test `dreamcam run` also uses to say so). Then the next frame is due within
        one input interval, well before the frame in flight is done: it is worth a wait, so it can
        be submitted now and two frames stay in flight. Without it, a frame taken just after a
        capture finds nothing newer, is collected alone, and the next one again (frames that run
        side by side, `--parallel-frames`, then ran one at a time).
        The wait is at most 1.5 input intervals and at most one output interval (about what the
        frame in flight still needs), so it seldom delays that frame; where the source sets the
        pace nothing waits."""
        src, out = self.source.fps, self.stats.out_rate.rate
        return min(1.5 / src, 1.0 / out) if engine_bound(src, out) else 0.0

    def _submit(self, frame: Frame) -> tuple[Frame, float]:
        t0 = time.perf_counter()
        self.backend.submit(frame.image, self.fit_mode)
        self.submitted += 1
        return frame, t0

    def _collect(self, frame: Frame, t_submit: float) -> np.ndarray:
        out = self._last_out = self.backend.collect()
        t1 = time.perf_counter()
        self._emit(Frame(out, frame.t_capture, frame.index))
        self.stats.record((t1 - t_submit) * 1000.0, frame.t_capture, t1)
        if self.meter is not None:
            self.meter.add(frame.image, out, frame.index)
        return out

    def _idle(self, last_out: np.ndarray | None, silent_s: float, now: float) -> None:
        if silent_s >= self.no_signal_after or last_out is None:
            if silent_s < self.no_signal_after:
                return  # nothing shown yet: wait for the first frame
            if self._no_signal is None:
                self._no_signal = no_signal_card(self.width, self.height)
            last_out = self._no_signal
        self.stats.repeats += 1
        self._emit(Frame(last_out, now, -1))

    def _emit(self, frame: Frame) -> None:
        for sink in self.sinks:
            sink.write(frame)

    def status(self) -> dict:
        s = self.stats
        lat = [x for sink in self.sinks for x in list(sink.latencies_ms)[-30:]] or list(s.latency_ms)[-30:]
        return {
            "fps": round(s.out_rate.rate, 2),
            "engine_ms": round(float(np.mean(list(s.engine_ms)[-30:])) if s.engine_ms else 0.0, 2),
            "latency_ms": round(float(np.median(lat)) if lat else 0.0, 1),
            "input_fps": round(self.source.fps, 2),
            "dropped": self.dropped,
            "frames": s.frames,
            "bypass": self.bypass,
            "signal_lost": bool(getattr(self.source, "signal_lost", False)),
            **self.flicker(),
        }

    def flicker(self) -> dict:
        """`flicker` (grey levels) and `flicker_rel` (times the input's own) over the last seconds;
        None where there is no figure: no meter, the first frames, bypass."""
        if self.meter is None or self.bypass:
            return {"flicker": None, "flicker_rel": None}
        flicker, rel = self.meter.reading()
        return {"flicker": flicker, "flicker_rel": rel}

    @property
    def dropped(self) -> int:
        return int(self.source.dropped + sum(sink.dropped for sink in self.sinks))

    def summary(self) -> dict:
        out = self.stats.summary()
        # list() copies each deque in one C call: iterating it here would race the sink thread's
        # appends ("deque mutated during iteration") while a recorder writes out its buffer
        sink_lat = [x for sink in self.sinks for x in list(sink.latencies_ms)]
        if sink_lat:
            out["glass_to_glass_p50_ms"] = round(float(np.percentile(sink_lat, 50)), 3)
            out["glass_to_glass_p99_ms"] = round(float(np.percentile(sink_lat, 99)), 3)
        out.update(
            {
                "input_fps": round(self.source.fps, 3),
                "dropped_input": int(self.source.dropped),
                "reconnects": int(getattr(self.source, "reconnects", 0)),
                "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "pipelined_frames": self.submitted,
                "overlapped_frames": self.overlapped,
            }
        )
        out.update(self.output_counts())
        if self.meter is not None:
            self.meter.flush()  # the last pair handed over is measured too
            out.update(self.meter.summary())
        else:
            out.update({"flicker": None, "flicker_rel": None})
        return out

    def output_counts(self) -> dict:
        """`dropped_output` and `sinks` (frames each output wrote) as they stand now. A recorder
        writes out its buffer while it closes, so read these again once the sinks are closed."""
        return {
            "dropped_output": int(sum(sink.dropped for sink in self.sinks)),
            "sinks": {f"{i}:{sink.kind}": sink.written for i, sink in enumerate(self.sinks)},
        }
