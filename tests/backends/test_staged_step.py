"""StagedStep (--overlap-stages): the frame step as three stages on three streams gives exactly
GraphedStep's frames. On the CPU the stages run one after another at submit, so what is tested
here is the hand-over between stages, the slots, the order and the results; the stream overlap
itself is in the GPU test at the end (run by the sweep's gputests row)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import tiny_pipeline
from dreamcam.backends.compiled.staged import StagedStep
from dreamcam.backends.compiled.step import GraphedStep

from cpu_frame_path import camera, counting_compiles, engine, pipelined


def _run(step_class, pipe, frames, *, frame_buffer_size=1, fit_mode="crop", device="cpu", dtype=torch.float32):
    e = engine(pipe, frame_buffer_size=frame_buffer_size, device=device, dtype=dtype)
    run = step_class(e, warmup=2, cuda_graph=device == "cuda")

    def seed_and_guidance():
        e.set_seed(11)
        e.set_guidance(1.8)

    # live changes between frames, fenced only where they happen, as the runner does
    changes = {2: lambda: e.set_strength(0.8), 4: seed_and_guidance}
    try:
        return pipelined(run, frames, fit_mode, changes=changes)
    finally:
        run.close()


@pytest.mark.parametrize("fit_mode", ["crop", "letterbox"])
def test_staged_frames_equal_graphed_frames_bit_for_bit(tiny_pipe, fit_mode):
    frames = camera(7, [(96, 80), (64, 64), (50, 120)])
    want = _run(GraphedStep, tiny_pipe, frames, fit_mode=fit_mode)
    got = _run(StagedStep, tiny_pipe, frames, fit_mode=fit_mode)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_staged_with_a_frame_buffer_of_two_and_its_synchronous_process(tiny_pipe):
    frames = [np.stack(pair) for pair in zip(camera(4, [(64, 64)]), camera(4, [(64, 64)], seed=1))]
    want = _run(GraphedStep, tiny_pipe, frames, frame_buffer_size=2)
    got = _run(StagedStep, tiny_pipe, frames, frame_buffer_size=2)
    for g, w in zip(got, want):
        assert g.shape == (2, 64, 64, 3) and np.array_equal(g, w)
    e = engine(tiny_pipe)
    with_process = StagedStep(e, warmup=1, cuda_graph=False)
    ref = GraphedStep(engine(tiny_pipe), warmup=1, cuda_graph=False)
    for f in camera(3, [(64, 64)]):
        assert np.array_equal(with_process.process(f), ref.process(f))


def test_each_stage_runs_the_compiled_modules_without_recompiling(tiny_pipe):
    """A compiled module guards on its input's layout: a stage fed a buffer with other strides than
    the whole step feeds it would compile a second version (minutes on a real UNet)."""
    e = engine(tiny_pipe)
    with counting_compiles(e) as counter:
        run = StagedStep(e, warmup=1, cuda_graph=False)
        run.process(camera(1, [(64, 64)])[0])
        pipelined(run, camera(3, [(80, 64), (64, 96)]))
    assert counter.frame_count == 3, f"{counter.frame_count} compiles for 3 modules: a stage recompiled one"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_staged_on_a_gpu_overlaps_and_still_equals_graphed():
    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
    frames = camera(8, [(96, 80), (64, 64), (1280, 720)])
    want = _run(GraphedStep, pipe, frames, device="cuda", dtype=torch.float16)
    got = _run(StagedStep, pipe, frames, device="cuda", dtype=torch.float16)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    e = engine(pipe, device="cuda", dtype=torch.float16)
    run = StagedStep(e, warmup=1)
    try:
        assert run.graphs is not None and len(run.graphs) == 3 and run.graph is run.graphs[1]
        streams = {run.encode_stream.cuda_stream, run.stream.cuda_stream, run.decode_stream.cuda_stream}
        assert len(streams) == 3
    finally:
        run.close()
