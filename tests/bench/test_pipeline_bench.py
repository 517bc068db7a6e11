"""The bench loop's pipelined timings (bench/loop.py): the engine alone two deep, and the live
loop through Runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends.eager import EagerBackend
from dreamcam.bench.loop import bench_live_loop, time_pipelined

from cpu_frame_path import LoggedGraphed, ProcessOnly

SIZE = 64


def engine(pipe) -> StreamEngine:
    e = StreamEngine(pipe, [30], SIZE, SIZE, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a watercolor fox")
    return e


def frames(n=3, size=(80, 60)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def test_time_pipelined_keeps_two_frames_in_flight_and_times_each(tiny_pipe):
    backend = LoggedGraphed(engine(tiny_pipe))
    r = time_pipelined(backend, frames(), 5, 2)
    assert r["pipelined"] is True and r["frames"] == 5 and backend.pending == 0
    assert r["fps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
    flow = [c for c in backend.calls if c in ("submit", "collect")]
    # warm-up 2 then timed 5, each run: submit, (submit, collect)*, collect
    assert flow == ["submit", "submit", "collect", "collect"] + ["submit"] + ["submit", "collect"] * 4 + ["collect"]
    with pytest.raises(ValueError, match="n >= 1"):
        time_pipelined(backend, frames(), 0, 0)


def test_time_pipelined_counts_every_frame_of_a_frame_buffer(tiny_pipe):
    """With frame_buffer_size 2 each call carries two frames: fps counts frames, as the
    synchronous figure does (the first GPU sweep reported calls per second here, half the rate)."""
    e = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none", frame_buffer_size=2, device="cpu",
                     dtype=torch.float32)
    e.prepare("a watercolor fox")
    backend = LoggedGraphed(e)
    stacks = [np.stack(frames(2, (SIZE, SIZE))) for _ in range(2)]
    r = time_pipelined(backend, stacks, 6, 1)
    assert r["frames"] == 6 and r["frames_per_call"] == 2
    assert backend.calls.count("submit") == 1 + 3  # warm-up call, then 6 frames in 3 calls
    sync = time_pipelined(ProcessOnly(e), stacks, 6, 1)
    assert sync["frames"] == 6 and sync["frames_per_call"] == 2 and sync["pipelined"] is False
    # one call after another: the wall time is the calls' sum, and each call brings two frames
    assert sync["fps"] == pytest.approx(2e3 / sync["mean_ms"], rel=0.2)


def test_time_pipelined_falls_back_to_process(tiny_pipe):
    r = time_pipelined(ProcessOnly(engine(tiny_pipe)), frames(size=(SIZE, SIZE)), 3, 1)
    assert r["pipelined"] is False and r["frames"] == 3 and r["p50_ms"] > 0


@pytest.mark.parametrize("pipeline", [None, True])
def test_live_loop_bench_runs_the_runner(tiny_pipe, pipeline, monkeypatch):
    """Auto on a CPU: eager does not overlap, so the synchronous path; forced: submit/collect. A
    controller checks for parameter changes before every frame, as in `dreamcam run`."""
    from dreamcam.control.controller import Controller

    applies = []
    real_apply = Controller.apply
    monkeypatch.setattr(Controller, "apply", lambda self, fence=None: (applies.append(fence), real_apply(self, fence)))
    r = bench_live_loop(EagerBackend(engine(tiny_pipe)), width=SIZE, height=SIZE, frames=4, warmup=1,
                        input_size=(160, 120), source_fps=200.0, pipeline=pipeline)
    assert r["frames"] == 4 and r["fps"] > 0 and r["p50_ms"] > 0 and r["latency_p50_ms"] > 0
    assert r["pipelined"] is bool(pipeline)
    assert (r["overlapped_frames"] > 0) is bool(pipeline), r
    assert r["input"] == "160x120 @ 200 fps"
    assert len(applies) >= 5  # warm-up and timed frames
