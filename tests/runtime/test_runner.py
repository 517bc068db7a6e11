"""The live loop with real threads: newest-only hand-over, bypass, silence, shutdown, and its summary
read while the outputs still write."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from dreamcam import StreamEngine
from dreamcam.backends import make_backend
from dreamcam.control.controller import Controller
from dreamcam.frames import Frame, fit
from dreamcam.knobs import ParamStore
from dreamcam.runtime.runner import Runner
from dreamcam.sinks import NullSink
from dreamcam.sources import TestPatternSource

from recording import RecordingSink

ROOT = Path(__file__).resolve().parents[2]


class PausableTestPattern(TestPatternSource):
    """The test pattern, whose capture thread can be made to go silent and come back."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.live = threading.Event()
        self.live.set()

    def _grab(self):
        if not self.live.wait(0.05):
            return None
        return super()._grab()


def engine_backend(pipe, size):
    engine = StreamEngine(pipe, [30], size, size, cfg_type="none")
    engine.prepare("a watercolor fox")
    return engine, make_backend("eager", engine)


def controlled_runner(pipe, *, bypass, frames, source_size=(64, 64)):
    """A 64x64 runner over the pausable test pattern whose bypass a test can switch (`store`)."""
    engine, backend = engine_backend(pipe, 64)
    store = ParamStore({"bypass": bypass})
    src = PausableTestPattern(*source_size, fps=60)
    sink = RecordingSink(64, 64)
    runner = Runner(src, backend, [sink], width=64, height=64, controller=Controller(engine, store), frames=frames)
    return runner, store, src, sink


def test_bypass_passes_the_framed_input_through(tiny_pipe):
    runner, _, src, sink = controlled_runner(tiny_pipe, bypass=True, frames=10, source_size=(160, 120))
    with sink, src:
        summary = runner.run()
    assert summary["frames"] == 10 and len(sink.frames) == 10
    for f in sink.frames:
        np.testing.assert_array_equal(f.image, fit(src.pattern(f.index), 64, 64, "crop"))
    # the model ran for none of them: no "frame p50 0.0 ms" in the exit line
    assert len(runner.stats.engine_ms) == 0 and runner.stats.frames == 10


def test_frame_ms_percentiles_count_only_frames_the_model_ran(tiny_pipe):
    runner, store, src, sink = controlled_runner(tiny_pipe, bypass=False, frames=12)
    with sink, src:
        t = threading.Thread(target=runner.run)
        t.start()
        while runner.stats.frames < 4 and t.is_alive():
            time.sleep(0.01)
        store.set("bypass", True)
        t.join(30)
    assert not t.is_alive()
    ran = len(runner.stats.engine_ms)
    assert 4 <= ran < 12 and runner.stats.frames == 12
    assert min(runner.stats.engine_ms) > 0.5  # the tiny model's real step, not a bypass's framing copy


def test_slow_engine_drops_frames_instead_of_queueing(tiny_pipe):
    engine, backend = engine_backend(tiny_pipe, 128)
    src = TestPatternSource(320, 240, fps=200)
    sink = RecordingSink(128, 128)
    with sink, src:
        summary = Runner(src, backend, [sink], width=128, height=128, frames=8).run()
    assert summary["dropped_input"] > 0
    # each frame the engine took was the newest one: its age on arrival is below one engine step
    assert summary["latency_p99_ms"] < 2.5 * summary["p99_ms"] + 50
    indices = [f.index for f in sink.frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)


def test_silent_source_repeats_last_frame_then_no_signal(tiny_pipe):
    engine, backend = engine_backend(tiny_pipe, 64)
    src = PausableTestPattern(64, 64, fps=30)
    sink = RecordingSink(64, 64)
    with sink, src:
        runner = Runner(src, backend, [sink], width=64, height=64, no_signal_after=0.6)
        t = threading.Thread(target=runner.run)
        t.start()
        time.sleep(0.5)
        live = runner.status()
        src.live.clear()
        time.sleep(1.5)
        silent = runner.status()
        deadline = time.monotonic() + 3  # a loaded machine: the last frames may have been slow
        while (silent["fps"] or silent["input_fps"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            silent = runner.status()
        src.live.set()
        time.sleep(0.6)
        runner.stop()
        t.join(5)
    assert not t.is_alive()
    assert live["fps"] > 0 and live["input_fps"] > 0
    # the status line / OBS script read 0 fps in and out while nothing comes, not the last rates
    assert silent["fps"] == 0 and silent["input_fps"] == 0, silent
    repeats = [f for f in sink.frames if f.index == -1]
    assert runner.stats.repeats == len(repeats) >= 5
    cards = [f for f in repeats if f.image.std() < 40 and f.image.mean() < 60]
    assert cards, "no 'no signal' card was shown"
    last_card = max(i for i, f in enumerate(sink.frames) if f is cards[-1])
    assert any(f.index >= 0 for f in sink.frames[last_card:]), "output did not resume"


def test_sigterm_stops_within_a_second(tmp_path):
    stats = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--source", "testpattern", "--sink", "null",
         "--width", "64", "--height", "64", "--stats-json", str(stats), "--osc-port", "0"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        for line in p.stderr:
            if "live:" in line:
                break
        time.sleep(1.0)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        took = time.perf_counter() - t0
    finally:
        p.kill()
    assert p.returncode == 0
    summary = json.loads(stats.read_text())
    # within a second, plus the frame that was in flight when the signal came
    allowed = 1.0 + summary["p99_ms"] / 1000.0
    assert took < allowed, f"took {took:.2f} s to stop (allowed {allowed:.2f} s)"


def test_similarity_filter_skips_the_engine_for_a_still_picture(tiny_pipe):
    from dreamcam.engine.similarity import SimilarityFilter

    engine, backend = engine_backend(tiny_pipe, 64)
    src = PausableTestPattern(64, 64, fps=60)
    src.pattern = lambda i: src._base.copy()  # a still camera: every frame the same picture
    sink = RecordingSink(64, 64)
    with sink, src:
        runner = Runner(src, backend, [sink], width=64, height=64, frames=12, similarity=SimilarityFilter(0.98, 3))
        summary = runner.run()
    # identical frames are always skipped, but at most 4 in a row (max_skip_frame 3 + 1)
    assert summary["skipped_similar"] == 12 - 1 - (12 - 1) // 5
    assert all(np.array_equal(f.image, sink.frames[0].image) for f in sink.frames)


def test_rates_read_zero_once_events_stop():
    from dreamcam.runtime.stats import RateMeter, recent_rate

    ticks = [i / 30 for i in range(31)]  # 30 fps for a second
    assert recent_rate(ticks, now=1.0) == 30.0
    assert recent_rate(ticks, now=1.9) == 30.0  # under a second without one: still running
    assert recent_rate(ticks, now=2.1) == 0.0
    slow = [0.0, 5.0, 10.0]  # a CPU engine at 5 s a frame is not stale after 1 s
    assert recent_rate(slow, now=20.0) == 0.2 and recent_rate(slow, now=26.0) == 0.0
    assert recent_rate([], now=1.0) == recent_rate([1.0], now=1.0) == 0.0
    meter = RateMeter(window=10)
    for t in ticks:
        meter.tick(time.perf_counter() - 2 + t)  # stopped a second ago
    assert meter.rate == 0.0


# The run summary is read while the outputs are still writing (a recorder finishing its buffer at
# the end of a long run): reading it must never trip over a sink thread's append.
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
