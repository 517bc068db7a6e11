"""Smoothing, latent feedback and the motion guard on the graphed frame paths (GraphedStep, StagedStep,
ParallelStep) and the TensorRT backend.

A captured step runs the feedback ops every frame whatever the knob (engine/feedback.py), with
the knob, gate and previous latent in device tensors, so a knob change reaches a captured graph
with no re-capture. On the CPU the same code runs without streams or graphs: what is tested here
is that the graphed paths give the eager engine's frames bit for bit through knob changes and a
scene cut, that the staged path hands each frame's motion score from encode to denoise, and that
parallel frames hold feedback at 0. The GPU tests at the end check the captured graphs."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.compiled.parallel import ParallelStep
from dreamcam.backends.compiled.staged import StagedStep
from dreamcam.backends.compiled.step import GraphedStep

from cpu_frame_path import camera, engine, pipelined

CUT_AT = 5


def clip() -> list[np.ndarray]:
    """Camera frames (a slowly shifting gradient with noise), then a cut to their negative."""
    frames = camera(9, [(64, 64)])
    return frames[:CUT_AT] + [255 - f for f in frames[CUT_AT:]]


def changes_for(e: StreamEngine) -> dict:
    """Feedback switched on at frame 2 and changed at the cut: the knob changes a captured graph must follow."""

    def on():
        e.set_motion_guard(0.5)
        e.set_feedback(0.6)
        e.set_smoothing(0.5)

    def change():
        e.set_feedback(0.3)
        e.set_smoothing(0.7)

    return {2: on, CUT_AT + 1: change}


def eager(pipe, frames, device="cpu", dtype=torch.float32) -> list[np.ndarray]:
    e = engine(pipe, device=device, dtype=dtype)
    changes = changes_for(e)
    outs = []
    for k, f in enumerate(frames):
        if k in changes:
            changes[k]()
        outs.append(e.img2img(f))
    return outs


def graphed(step_class, pipe, frames, device="cpu", dtype=torch.float32) -> tuple[list[np.ndarray], list[float]]:
    e = engine(pipe, device=device, dtype=dtype)
    run = step_class(e, warmup=2, cuda_graph=device == "cuda")
    graph = run.graph
    try:
        outs = pipelined(run, frames, changes=changes_for(e))
        assert run.graph is graph  # no re-capture
        return outs, e.latent_feedback.applied.item()
    finally:
        run.close()
        assert not e.latent_feedback.in_graph


@pytest.mark.parametrize("step_class", [GraphedStep, StagedStep])
def test_graphed_paths_follow_the_eager_engine_through_knob_changes_and_a_cut(tiny_pipe, step_class):
    frames = clip()
    want = eager(tiny_pipe, frames)
    got, last_applied = graphed(step_class, tiny_pipe, frames)
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"frame {k}"
    assert last_applied == pytest.approx(0.3 * 3 / 4)  # 3 frames after the cut: ramped to 3/4


def test_staged_hands_each_frames_motion_score_to_its_denoise(tiny_pipe):
    e = engine(tiny_pipe)
    run = StagedStep(e, warmup=1, cuda_graph=False)
    feedback = e.latent_feedback
    try:
        assert feedback.score_seen is not feedback.score  # encode writes one, denoise reads the other
        e.set_motion_guard(0.5)
        e.set_feedback(0.6)
        cuts = []
        for f in clip():
            run.process(f)
            cuts.append(feedback.cut.item())
        assert cuts == [1.0 if k in (0, CUT_AT) else 0.0 for k in range(len(cuts))]
    finally:
        run.close()
    assert feedback.score_seen is feedback.score


def test_parallel_frames_hold_feedback_at_zero_and_say_so(tiny_pipe, caplog):
    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a watercolor fox", seed=3)
    ref = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    ref.prepare("a watercolor fox", seed=3)
    e.set_feedback(0.5)
    with caplog.at_level(logging.WARNING, logger="dreamcam.engine.feedback"):
        run = ParallelStep(e, warmup=1, cuda_graph=False)
    try:
        assert e.feedback == 0.0 and not e.latent_feedback.in_graph
        assert "feedback 0.5 is off: --parallel-frames runs two frames side by side" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dreamcam.engine.feedback"):
            e.set_feedback(0.4)  # a live change later: refused the same way
        assert e.feedback == 0.0 and "feedback stays 0: --parallel-frames" in caplog.text
        with caplog.at_level(logging.WARNING, logger="dreamcam.engine.feedback"):
            e.set_smoothing(0.4)
        assert e.smoothing == 0.0 and "smoothing stays 0: --parallel-frames" in caplog.text
        frames = camera(4, [(64, 64)])
        for g, w in zip(pipelined(run, frames), [ref.img2img(f) for f in frames]):
            assert np.array_equal(g, w)
    finally:
        run.close()
    assert e.latent_feedback.blocked is None
    e.set_feedback(0.4)
    assert e.feedback == 0.4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("step_class", [GraphedStep, StagedStep])
def test_captured_graphs_follow_the_knobs_on_a_gpu(step_class):
    """Captured with feedback 0, the graph follows feedback and guard changes with no re-capture:
    the frames match the eager engine's (fp16; a graph replays the same kernels)."""
    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
    frames = clip()
    want = eager(pipe, frames, device="cuda", dtype=torch.float16)
    got, last_applied = graphed(step_class, pipe, frames, device="cuda", dtype=torch.float16)
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 1, f"frame {k}"
    assert last_applied == pytest.approx(0.3 * 3 / 4)


@pytest.mark.gpu
@pytest.mark.skipif(not (importlib.util.find_spec("tensorrt") and torch.cuda.is_available()),
                    reason="needs the tensorrt package (10 or 11) and a CUDA GPU; neither can be installed here")
def test_tensorrt_backend_runs_feedback_in_its_frame_step(tmp_path):
    from dreamcam.backends import make_backend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)

    def eng():
        e = StreamEngine(pipe, [35], 256, 256, cfg_type="none", device="cuda", dtype=torch.float16)
        e.prepare("a cat")
        e.set_motion_guard(0.5)
        e.set_feedback(0.5)
        return e

    ref = eng()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with make_backend("tensorrt", eng(), folder=str(tmp_path)) as b:
        for _ in range(4):
            frame = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
            assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
