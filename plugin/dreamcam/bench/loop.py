"""Benchmarks of the live loop (the CLI's `dreamcam bench` calls these).

- `bench_bypass` (`dreamcam bench --bypass`): what the loop itself costs, with no model in the
  way. A 1280x720 test pattern, captured at 240 fps (a fast camera: an unpaced pattern would
  spend the core on frames nobody takes), goes through the real runner (framing to the engine
  size, bypass instead of the engine) into the real virtual-camera sink (framing to 1280x720,
  pyvirtualcam's `Camera.send`). The only stand-in is the camera driver: a pyvirtualcam
  backend registered here that takes each frame and discards it, so the figure is dreamcam's
  own cost, not the OS's.
- `bench_live_loop` (`dreamcam bench --loop`): a test pattern at capture size through the real
  `Runner` and a backend into a null sink: the same frame path as `dreamcam run`, pipelined
  (submit k+1 before collecting k) where the backend overlaps, framing included.
- `time_pipelined`: the engine alone, pipelined: frame i+1 submitted before frame i is
  collected, as the runner does when the engine is the bottleneck.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import pyvirtualcam
from pyvirtualcam.camera import BACKENDS
from pyvirtualcam.util import encode_fourcc

from dreamcam.bench.timing import summarize, time_frames
from dreamcam.control.controller import Bypass, Controller
from dreamcam.knobs import ParamStore
from dreamcam.runtime.flicker import FlickerMeter
from dreamcam.runtime.runner import Runner
from dreamcam.sinks.base import NullSink
from dreamcam.sinks.virtualcam import VirtualCamSink
from dreamcam.sources.testpattern import TestPatternSource

BENCH_BACKEND = "dreamcam-discard"
SOURCE_FPS = 240.0


class DiscardCamera:
    """A pyvirtualcam backend that accepts RGB frames and keeps only a count."""

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0

    def send(self, frame: np.ndarray) -> None:
        self.frames += 1

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "discard"

    def native_fourcc(self) -> int:
        return encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)


@contextlib.contextmanager
def discard_backend() -> Iterator[str]:
    """The discard backend, registered for the benchmark only (it never shows up as a camera)."""
    pyvirtualcam.register_backend(BENCH_BACKEND, DiscardCamera)
    try:
        yield BENCH_BACKEND
    finally:
        BACKENDS.pop(BENCH_BACKEND, None)


def bench_bypass(
    *,
    seconds: float = 5.0,
    input_size: tuple[int, int] = (1280, 720),
    engine_size: tuple[int, int] = (512, 512),
    output_size: tuple[int, int] = (1280, 720),
    one_core: bool = True,
) -> dict:
    """Run the loop for `seconds`; return loop fps and capture-to-camera latency (ms)."""
    pinned = None
    cv_threads = cv2.getNumThreads()
    if one_core and hasattr(os, "sched_setaffinity"):
        pinned = min(os.sched_getaffinity(0))
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {pinned})  # threads started below inherit it
        cv2.setNumThreads(1)
    try:
        # an output rate far above the loop's, so every frame the loop makes is sent
        source = TestPatternSource(*input_size, fps=SOURCE_FPS)
        with discard_backend() as backend, VirtualCamSink(*output_size, fps=10_000.0, backend=backend) as sink, source:
            runner = Runner(source, None, [sink], width=engine_size[0], height=engine_size[1], controller=Bypass())
            timer = threading.Timer(seconds, runner.stop)
            timer.start()
            t0, c0 = time.perf_counter(), time.process_time()
            summary = runner.run()
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            timer.cancel()
        sent = sink.written
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, previous)
            cv2.setNumThreads(cv_threads)
    lat = np.asarray(list(sink.latencies_ms), dtype=np.float64)
    return {
        "mode": "bypass",
        "input": f"{input_size[0]}x{input_size[1]}",
        "engine": f"{engine_size[0]}x{engine_size[1]}",
        "output": f"{output_size[0]}x{output_size[1]} virtualcam",
        "one_core": pinned is not None,
        "seconds": round(elapsed, 2),
        "source_fps": SOURCE_FPS,
        "loop_fps": round(summary["frames"] / elapsed, 1),
        "camera_fps": round(sent / elapsed, 1),
        "loop_frame_ms": round(1000.0 * elapsed / max(1, summary["frames"]), 3),
        # CPU time of the whole process per frame: the loop rate on a core nothing else uses
        "cpu_ms_per_frame": round(1000.0 * cpu / max(1, summary["frames"]), 3),
        "fps_per_free_core": round(summary["frames"] / cpu, 1) if cpu > 0 else None,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "dropped_input": summary["dropped_input"],
        "target": ">= 200 fps on one core; < 1 frame (33.3 ms at 30 fps) of added latency",
    }


def time_pipelined(backend: Any, frames: Sequence[np.ndarray], n: int, warmup: int) -> dict:
    """Engine-only pipelined throughput of `backend` over `frames` (uint8 (H, W, 3) RGB, any size,
    used in turn, or stacks (F, H, W, 3) for an engine with frame_buffer_size F): `warmup` calls
    untimed, then n // F calls timed, each submitted before the one ahead is collected (at most
    two in flight). Returns frames (calls x F), frames_per_call, fps (frames / wall seconds of the
    timed run), p50_ms / p99_ms / mean_ms (per call: from its submit to the end of its collect,
    which includes queueing behind the call ahead) and pipelined (False: the backend has only
    `process`, timed one call at a time)."""
    if n < 1 or warmup < 0 or not frames:
        raise ValueError(f"need n >= 1, warmup >= 0 and at least one frame; got n={n}, warmup={warmup}, "
                         f"{len(frames)} frames")
    per_call = frames[0].shape[0] if frames[0].ndim == 4 else 1
    if not (hasattr(backend, "submit") and hasattr(backend, "collect")):
        timed = time_frames(lambda i: backend.process(frames[i % len(frames)]), n, warmup, per_call)
        return dict(timed, pipelined=False)
    _pipelined_frames(backend, frames, warmup, [])
    ms: list[float] = []
    t_run = time.perf_counter()
    _pipelined_frames(backend, frames, max(1, n // per_call), ms)
    return dict(summarize(ms, time.perf_counter() - t_run, per_call), pipelined=True)


def _pipelined_frames(backend: Any, frames: Sequence[np.ndarray], count: int, ms: list[float]) -> None:
    """Run `count` frames two deep; append each one's submit -> collect milliseconds to `ms`."""
    submitted: deque[float] = deque()
    for i in range(count):
        submitted.append(time.perf_counter())
        backend.submit(frames[i % len(frames)])
        if len(submitted) == 2:
            backend.collect()
            ms.append((time.perf_counter() - submitted.popleft()) * 1e3)
    while submitted:
        backend.collect()
        ms.append((time.perf_counter() - submitted.popleft()) * 1e3)


def bench_live_loop(
    backend: Any,
    *,
    width: int,
    height: int,
    frames: int = 200,
    warmup: int = 10,
    input_size: tuple[int, int] = (1280, 720),
    source_fps: float = 480.0,
    pipeline: bool | None = None,
    flicker_rate: float = 0.0,
) -> dict:
    """The live loop as `dreamcam run` runs it: a moving test pattern of `input_size` (w, h)
    captured at `source_fps` (faster than the engine, so the engine sets the pace) -> `Runner`
    (framing to width x height, `backend`, pipelined where it overlaps, and where the backend has
    an engine, a `Controller` over a parameter store nobody writes to, so each frame pays the
    same parameter check as in `dreamcam run`) -> a null sink.

    `warmup` frames run first, then `frames` are timed. Returns frames, fps (frames / wall
    seconds), p50_ms / p99_ms (the runner's engine_ms: per frame, the time the backend held
    it), latency_p50_ms / latency_p99_ms (capture -> handed to the sink), pipelined,
    overlapped_frames and dropped_input (captured frames the loop never took). flicker_rate > 0:
    the loop also feeds a `FlickerMeter` sampling that many pairs a second (as `dreamcam run`
    does), and the result adds its flicker, flicker_rel, flicker_samples and flicker_ms.
    """
    if frames < 1 or warmup < 0:
        raise ValueError(f"need frames >= 1 and warmup >= 0; got {frames} and {warmup}")
    source = TestPatternSource(*input_size, fps=source_fps)
    engine = getattr(backend, "engine", None)
    with contextlib.ExitStack() as stack:
        controller = None
        if engine is not None:
            controller = stack.enter_context(Controller(engine, ParamStore({"prompt": engine.prompt})))
        sink = stack.enter_context(NullSink(width, height))
        stack.enter_context(source)
        kw = {"width": width, "height": height, "pipeline": pipeline, "controller": controller}
        if warmup:
            Runner(source, backend, [sink], frames=warmup, **kw).run()
        meter = stack.enter_context(FlickerMeter(width, height, rate=flicker_rate)) if flicker_rate > 0 else None
        runner = Runner(source, backend, [sink], frames=frames, meter=meter, **kw)
        dropped0 = source.dropped
        t0 = time.perf_counter()
        summary = runner.run()
        elapsed = time.perf_counter() - t0
    meter_figures = {k: summary[k] for k in ("flicker", "flicker_rel", "flicker_samples", "flicker_ms")} if meter else {}
    return {
        **meter_figures,
        "frames": summary["frames"],
        "fps": round(summary["frames"] / elapsed, 2),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "latency_p50_ms": summary["latency_p50_ms"],
        "latency_p99_ms": summary["latency_p99_ms"],
        "pipelined": summary["pipelined_frames"] > 0,
        "overlapped_frames": summary["overlapped_frames"],
        "dropped_input": source.dropped - dropped0,
        "input": f"{input_size[0]}x{input_size[1]} @ {source_fps:g} fps",
    }
