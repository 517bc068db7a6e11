"""`dreamcam bench --bypass`: what the live loop itself costs, with no model in the way.

A 1280x720 test pattern, captured at 240 fps (a fast camera: an unpaced pattern would spend
the core on frames nobody takes), goes through the real
runner (framing to the engine size, bypass instead of the engine) into the real virtual-camera
sink (framing to 1280x720, pyvirtualcam's `Camera.send`). The only stand-in is the camera
driver: a pyvirtualcam backend registered here that takes each frame and discards it, so the
figure is dreamcam's own cost, not the OS's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
import time

import numpy as np

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
        from pyvirtualcam.util import encode_fourcc

        import pyvirtualcam

        return encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)


@contextlib.contextmanager
def discard_backend() -> Iterator[str]:
    """The discard backend, registered for the benchmark only (it never shows up as a camera)."""
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

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
    import cv2

    from dreamcam.controls import Bypass
    from dreamcam.runner import Runner
    from dreamcam.sinks import VirtualCamSink
    from dreamcam.sources import TestPatternSource

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
