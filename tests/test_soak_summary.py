"""Soak: the run summary is read while the outputs are still writing (a recorder finishing its
buffer at the end of a long run); reading it must never trip over a sink thread's append."""

import sys
import threading
import time

import numpy as np

from dreamcam.frames import Frame
from dreamcam.runtime.runner import Runner
from dreamcam.sinks import NullSink
from dreamcam.sources import TestPatternSource


def test_summary_while_sinks_write_never_raises():
    source = TestPatternSource(64, 64, fps=30)  # never started: the summary reads its counters only
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: a race shows within a second
    stop = threading.Event()
    with NullSink(64, 64, 1000.0) as a, NullSink(64, 64, 1000.0) as b:

        def feed() -> None:
            i = 0
            while not stop.is_set():
                for sink in (a, b):
                    sink.write(Frame(image, time.perf_counter(), i))
                i += 1

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        runner = Runner(source, object(), [a, b], width=64, height=64)
        try:
            deadline = time.monotonic() + 3.0
            rounds = 0
            while time.monotonic() < deadline:
                summary = runner.summary()
                rounds += 1
        finally:
            stop.set()
            writer.join(2.0)
            sys.setswitchinterval(old)
    assert rounds > 100
    assert a.written > 0 and b.written > 0
    assert 0.0 <= summary["glass_to_glass_p50_ms"] <= summary["glass_to_glass_p99_ms"]
