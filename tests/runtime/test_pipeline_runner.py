"""The live loop's pipelined path, with real source and sink threads and the tiny pipeline.

The backend is the graphed backends' real frame path (`GraphedStep` behind `FramePipeline`) on
a CPU engine, with a log of the calls the runner makes; pipelining is forced on
(`pipeline=True`) because on a CPU nothing overlaps and the runner would not choose it. Every
test checks the outputs against a second engine fed the same captured frames in the order the
runner emitted them: a frame lost, repeated, reordered or run with the wrong parameters breaks
the equality, because the stream batch carries state from frame to frame.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends.eager import EagerBackend
from dreamcam.engine.framing import fit_torch
from dreamcam.frames import fit
from dreamcam.runtime.runner import Runner
from dreamcam.sources import TestPatternSource
from dreamcam.sources import VideoFileSource

from cpu_frame_path import LoggedGraphed, ProcessOnly
from recording import RecordingSink

SIZE = 64


class CountingPattern(TestPatternSource):
    """The test pattern, counting the frames the runner took from it."""

    taken = 0

    def read(self, timeout=0.5):
        frame = super().read(timeout)
        self.taken += frame is not None
        return frame


class Script:
    """A controller (the runner's `apply()` / `bypass` contract) that runs `actions[n]` at its
    n-th apply and logs each apply into `log` (the backend's call log)."""

    def __init__(self, log, actions=None):
        self.log, self.actions, self.applies, self.bypass = log, actions or {}, 0, False

    def apply(self, fence=None):
        self.log.append("apply")
        self.applies += 1
        action = self.actions.get(self.applies)
        if action is not None:
            if fence is not None:  # as Controller does: a fence only before a write
                fence()
            action(self)


def engine(pipe) -> StreamEngine:
    e = StreamEngine(pipe, [20, 40], SIZE, SIZE, cfg_type="self", device="cpu", dtype=torch.float32)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    return e


def device_framed(image):
    return fit_torch(torch.from_numpy(image), SIZE, SIZE).numpy()


def replay(pipe, captured, sink_frames, *, frame=device_framed, changes=None):
    """Feed a fresh engine the captured images of the emitted frames, in emitted order; changes:
    {position: fn(engine)} run before the frame at that position. Returns its outputs."""
    ref, out = engine(pipe), []
    for pos, f in enumerate(sink_frames):
        if changes and pos in changes:
            changes[pos](ref)
        out.append(ref.img2img(frame(captured(f.index))))
    return out


def assert_same(sink_frames, want):
    assert len(sink_frames) == len(want)
    for f, w in zip(sink_frames, want):
        np.testing.assert_array_equal(f.image, w)


def test_engine_bound_loop_overlaps_and_emits_every_frame_in_order(tiny_pipe):
    backend = LoggedGraphed(engine(tiny_pipe))
    ctrl = Script(backend.calls)
    src, sink = CountingPattern(96, 72, fps=400), RecordingSink(SIZE, SIZE)
    with sink, src:
        summary = Runner(src, backend, [sink], width=SIZE, height=SIZE, controller=ctrl, frames=6, pipeline=True).run()
    assert summary["frames"] == 6 and len(sink.frames) == 6 == src.taken and backend.pending == 0
    # the source outruns the engine: frames after the first are submitted with one in flight
    assert summary["overlapped_frames"] >= 4, summary
    assert summary["p50_ms"] > 0 and summary["latency_p50_ms"] >= summary["p50_ms"] * 0.5
    indices = [f.index for f in sink.frames]
    assert indices == sorted(set(indices))
    assert_same(sink.frames, replay(tiny_pipe, src.pattern, sink.frames))
    calls = backend.calls
    assert calls.count("submit") == calls.count("collect") == 6 and "process" not in calls
    # each frame's parameters are applied right before it is submitted; with nothing to change, no
    # fence (it would make each frame wait for the one ahead)
    assert all(calls[i - 1] == "apply" for i, c in enumerate(calls) if c == "submit"), calls
    assert "fence" not in calls
    flow = [c for c in calls if c in ("submit", "collect")]
    assert any(flow[i : i + 2] == ["submit", "submit"] for i in range(len(flow)))  # two deep


def test_a_change_applies_from_the_next_submitted_frame(tiny_pipe):
    backend = LoggedGraphed(engine(tiny_pipe))
    at = {}

    def change(ctrl):
        backend.engine.set_strength(0.8)
        at["pos"] = backend.calls.count("submit")  # the next submit is the frame it applies to

    ctrl = Script(backend.calls, {3: change})
    src, sink = TestPatternSource(96, 72, fps=400), RecordingSink(SIZE, SIZE)
    with sink, src:
        Runner(src, backend, [sink], width=SIZE, height=SIZE, controller=ctrl, frames=6, pipeline=True).run()
    assert 0 < at["pos"] < 6
    # the one change is fenced, right before the submit of the frame it applies to
    calls = backend.calls
    assert calls.count("fence") == 1
    i = calls.index("fence")
    assert calls[i - 1] == "apply" and calls[i + 1] == "submit" and calls[: i + 1].count("submit") == at["pos"]
    changes = {at["pos"]: lambda e: e.set_strength(0.8)}
    assert_same(sink.frames, replay(tiny_pipe, src.pattern, sink.frames, changes=changes))
    off_by_one = replay(tiny_pipe, src.pattern, sink.frames, changes={at["pos"] - 1: changes[at["pos"]]})
    assert not np.array_equal(sink.frames[at["pos"] - 1].image, off_by_one[at["pos"] - 1])


class LockstepPattern(TestPatternSource):
    """A source slower than the engine by construction, however loaded the machine: it captures
    frame i + 1 only after the output of frame i reached the sink."""

    def __init__(self, *a, sink, **kw):
        super().__init__(*a, fps=None, **kw)
        self.sink = sink

    def _grab(self):
        if len(self.sink.frames) < self._index:
            time.sleep(0.002)
            return None
        return super()._grab()


def test_a_slow_source_is_not_held_back(tiny_pipe):
    """The source sets the pace: each frame is collected right after its submit (no overlap, no
    wait for a newer frame)."""
    backend = LoggedGraphed(engine(tiny_pipe))
    sink = RecordingSink(SIZE, SIZE)
    src = LockstepPattern(96, 72, sink=sink)
    with sink, src:
        runner = Runner(src, backend, [sink], width=SIZE, height=SIZE, frames=3, pipeline=True)
        summary = runner.run()
    assert summary["frames"] == 3 and summary["overlapped_frames"] == 0
    # between a frame's submit and its collect the loop only looks for a newer frame, it waits for none
    waited = [held - busy for held, busy in zip(runner.stats.engine_ms, backend.busy_ms)]
    assert max(waited) < 50, waited
    assert [c for c in backend.calls if c != "fence"] == ["submit", "collect"] * 3
    assert_same(sink.frames, replay(tiny_pipe, src.pattern, sink.frames))


class TwoLaneDevice:
    """Stands in for a GPU running the frames in flight side by side (`--parallel-frames`), which
    cannot exist on this machine: `submit` returns at once and each frame is done `work_s` after
    its own submit, whatever else is in flight; `collect` sleeps until the oldest one is done. The
    output is the CPU framing of the captured frame, so order and content are checkable."""

    name = "two-lane-stand-in"
    overlaps = True

    def __init__(self, work_s: float) -> None:
        self.work_s = work_s
        self._queue = []

    def submit(self, frame, fit_mode="crop"):
        self._queue.append((time.perf_counter() + self.work_s, fit(frame, SIZE, SIZE, fit_mode)))

    def collect(self):
        done_at, out = self._queue.pop(0)
        time.sleep(max(0.0, done_at - time.perf_counter()))
        return out

    def process(self, frame):
        self.submit(frame)
        return self.collect()

    def fence(self):
        pass


def run_two_lane(work_s, source_fps, frames):
    backend = TwoLaneDevice(work_s)
    src, sink = TestPatternSource(96, 72, fps=source_fps), RecordingSink(SIZE, SIZE)
    with sink, src:
        summary = Runner(src, backend, [sink], width=SIZE, height=SIZE, frames=frames).run()
    indices = [f.index for f in sink.frames]
    assert indices == sorted(set(indices)) and len(indices) == frames
    for f in sink.frames:
        np.testing.assert_array_equal(f.image, fit(src.pattern(f.index), SIZE, SIZE))
    return summary


def test_an_engine_bound_loop_waits_for_the_next_frame_and_keeps_two_in_flight():
    """Source at 100 fps, frames of 40 ms that run side by side. A frame taken just after a capture
    finds nothing newer; collecting it at once would leave the second lane idle (25 fps, nothing
    overlapped, as the H200 sweep of 2026-11-26 showed: 171 fps in the loop for 213 two deep).
    The loop waits for the next capture instead, submits it, and the two lanes give ~50 fps."""
    summary = run_two_lane(0.04, 100, 40)
    assert summary["overlapped_frames"] >= 25, summary
    assert summary["fps"] >= 35, summary


def test_a_source_bound_loop_collects_at_once():
    """Source at 20 fps, frames of 10 ms: the source sets the pace, so nothing waits for a newer
    frame and each frame is out about 10 ms after its submit."""
    summary = run_two_lane(0.01, 20, 12)
    assert summary["p50_ms"] < 25, summary
    # (a capture thread starved on a loaded machine can deliver two frames close together once)
    assert summary["overlapped_frames"] <= 2, summary


def test_bypass_switched_on_mid_stream_drains_the_pipe_first(tiny_pipe):
    backend = LoggedGraphed(engine(tiny_pipe))
    ctrl = Script(backend.calls, {3: lambda c: setattr(c, "bypass", True)})
    src, sink = CountingPattern(96, 72, fps=400), RecordingSink(SIZE, SIZE)
    with sink, src:
        summary = Runner(src, backend, [sink], width=SIZE, height=SIZE, controller=ctrl, frames=6, pipeline=True).run()
    assert summary["frames"] == 6 == src.taken and backend.pending == 0  # none taken and lost
    n = backend.calls.count("collect")
    assert 0 < n < 6
    engine_out, passed = sink.frames[:n], sink.frames[n:]
    assert_same(engine_out, replay(tiny_pipe, src.pattern, engine_out))
    for f in passed:  # bypass: the CPU framing of the captured frame, untouched
        np.testing.assert_array_equal(f.image, fit(src.pattern(f.index), SIZE, SIZE))


def test_stop_from_another_thread_leaves_nothing_in_flight(tiny_pipe):
    backend = LoggedGraphed(engine(tiny_pipe))
    src, sink = TestPatternSource(96, 72, fps=400), RecordingSink(SIZE, SIZE)
    with sink, src:
        runner = Runner(src, backend, [sink], width=SIZE, height=SIZE, pipeline=True)
        t = threading.Thread(target=runner.run)
        t.start()
        time.sleep(0.6)
        runner.stop()
        t.join(10)
    assert not t.is_alive() and backend.pending == 0
    assert runner.stats.frames == len(sink.frames) == backend.calls.count("submit") > 0


def write_clip(path, frames=12, size=(80, 60), fps=200.0):
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert out.isOpened()
    for i in range(frames):
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 3 + i * 9) % 256, (y * 4) % 256, np.full_like(x, 40 + 15 * i)], -1).astype(np.uint8)
        out.write(img)
    out.release()
    return str(path)


def decoded(path):
    cap, out = cv2.VideoCapture(path), []
    ok, img = cap.read()
    while ok:
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        ok, img = cap.read()
    cap.release()
    return out


@pytest.mark.parametrize("kind", ["graphed", "eager", "process-only"])
def test_video_file_through_each_kind_of_backend(tiny_pipe, tmp_path, kind):
    """A real clip (OpenCV decode, looping) through the pipelined graphed path, the eager
    backend's submit/collect, and a backend with only `process` (the synchronous path)."""
    clip = write_clip(tmp_path / "clip.mp4")
    images = decoded(clip)
    eng = engine(tiny_pipe)
    backend = {"graphed": LoggedGraphed, "eager": EagerBackend, "process-only": ProcessOnly}[kind](eng)
    src, sink = VideoFileSource(clip, fps=200), RecordingSink(SIZE, SIZE)
    with sink, src:
        summary = Runner(src, backend, [sink], width=SIZE, height=SIZE, frames=4, pipeline=True).run()
    assert summary["frames"] == 4 and len(sink.frames) == 4
    assert summary["pipelined_frames"] == (0 if kind == "process-only" else 4), summary
    assert (summary["overlapped_frames"] > 0) == (kind != "process-only"), summary
    framing = device_framed if kind == "graphed" else (lambda im: fit(im, SIZE, SIZE))
    assert_same(sink.frames, replay(tiny_pipe, lambda i: images[i % len(images)], sink.frames, frame=framing))


def test_similarity_filter_keeps_the_synchronous_path(tiny_pipe):
    from dreamcam.engine.similarity import SimilarityFilter

    backend = LoggedGraphed(engine(tiny_pipe))
    src = TestPatternSource(SIZE, SIZE, fps=100)
    src.pattern = lambda i: src._base.copy()  # a still picture: the filter skips repeats
    sink = RecordingSink(SIZE, SIZE)
    with sink, src:
        summary = Runner(src, backend, [sink], width=SIZE, height=SIZE, frames=5, pipeline=True,
                         similarity=SimilarityFilter(0.98, 3)).run()
    assert summary["skipped_similar"] > 0 and summary["overlapped_frames"] == 0
    assert "submit" not in backend.calls and backend.calls.count("process") == 5 - summary["skipped_similar"]
