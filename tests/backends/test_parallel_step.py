"""ParallelStep (--parallel-frames): two frames in flight on two streams give exactly GraphedStep's
frames, where frames carry no state (1 step, cfg none or full). On the CPU each submit computes at
once, so what is tested here is which state the engine carries, the per-slot buffers, order and
results, and the refusals; the streams running side by side are in the GPU test at the end (run by
the sweep's gputests row)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.compiled.parallel import ParallelStep, carries_state
from dreamcam.backends.compiled.step import GraphedStep
from dreamcam.backends.options import add_knob_arguments, check_knobs
from dreamcam.errors import ConfigError

from cpu_frame_path import camera, counting_compiles, pipelined


def _engine(pipe, *, t_index=(35,), cfg="none", frame_buffer_size=1, device="cpu", dtype=torch.float32):
    e = StreamEngine(pipe, list(t_index), 64, 64, cfg_type=cfg, frame_buffer_size=frame_buffer_size,
                     device=device, dtype=dtype)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    return e


def _run(step_class, pipe, frames, *, cfg="none", fit_mode="crop", frame_buffer_size=1, device="cpu",
         dtype=torch.float32):
    e = _engine(pipe, cfg=cfg, frame_buffer_size=frame_buffer_size, device=device, dtype=dtype)
    run = step_class(e, warmup=2, cuda_graph=device == "cuda")

    def seed_and_guidance():
        e.set_seed(11)
        e.set_guidance(1.8)

    # live changes between frames, fenced only where they happen, as the runner does
    changes = {2: lambda: e.set_strength(0.8), 3: lambda: e.set_prompt("a marble statue"), 4: seed_and_guidance}
    try:
        return pipelined(run, frames, fit_mode, changes=changes)
    finally:
        run.close()


@pytest.mark.parametrize("cfg,fit_mode", [("none", "crop"), ("full", "letterbox")])
def test_parallel_frames_equal_graphed_frames_bit_for_bit(tiny_pipe, cfg, fit_mode):
    frames = camera(7, [(96, 80), (64, 64), (50, 120)])
    want = _run(GraphedStep, tiny_pipe, frames, cfg=cfg, fit_mode=fit_mode)
    got = _run(ParallelStep, tiny_pipe, frames, cfg=cfg, fit_mode=fit_mode)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert not all(np.array_equal(got[0], g) for g in got[1:])  # the frames and the changes show


def test_each_slot_has_its_own_buffers_and_a_frame_buffer_of_two_works(tiny_pipe):
    e = _engine(tiny_pipe)
    run = ParallelStep(e, warmup=1, cuda_graph=False)
    a, b = run.steps
    assert a.frames_in.data_ptr() != b.frames_in.data_ptr() and a.frames_out.data_ptr() != b.frames_out.data_ptr()
    ref = GraphedStep(_engine(tiny_pipe), warmup=1, cuda_graph=False)
    for f in camera(3, [(64, 64)]):
        assert np.array_equal(run.process(f), ref.process(f))
    frames = [np.stack(pair) for pair in zip(camera(4, [(64, 64)]), camera(4, [(64, 64)], seed=1))]
    want = _run(GraphedStep, tiny_pipe, frames, frame_buffer_size=2)
    got = _run(ParallelStep, tiny_pipe, frames, frame_buffer_size=2)
    for g, w in zip(got, want):
        assert g.shape == (2, 64, 64, 3) and np.array_equal(g, w)


def test_frames_with_no_state_leave_the_engine_state_untouched(tiny_pipe):
    """What ParallelStep relies on: with 1 step and cfg none or full, a frame writes no engine tensor."""
    for cfg in ("none", "full"):
        e = _engine(tiny_pipe, cfg=cfg)
        assert carries_state(e) is None
        state = {k: v.clone() for k, v in vars(e).items() if isinstance(v, torch.Tensor)}
        e.img2img(camera(1, [(64, 64)])[0])
        for k, v in vars(e).items():
            if k in state:
                assert torch.equal(v, state[k]), f"cfg {cfg}: a frame changed engine.{k}"


@pytest.mark.parametrize("t_index,cfg,why", [
    ((20, 40), "none", r"2 steps keep each frame's latents in the stream batch"),
    ((35,), "self", r"--cfg self carries its residual noise to the next frame"),
    ((35,), "initialize", r"--cfg initialize carries its residual noise"),
])
def test_frames_that_carry_state_are_refused_with_the_fix(tiny_pipe, t_index, cfg, why):
    e = _engine(tiny_pipe, t_index=t_index, cfg=cfg)
    assert carries_state(e) is not None
    with pytest.raises(ConfigError, match=rf"--parallel-frames runs two frames at once.*{why}.*"
                                          r"Use 1 step with --cfg none or full, or drop --parallel-frames"):
        ParallelStep(e, warmup=1, cuda_graph=False)


def test_parallel_frames_and_overlap_stages_do_not_combine():
    import argparse

    p = argparse.ArgumentParser()
    add_knob_arguments(p)
    with pytest.raises(ConfigError, match="--overlap-stages and --parallel-frames .* pick one"):
        check_knobs(p.parse_args(["--overlap-stages", "--parallel-frames"]), "compiled")
    with pytest.raises(ConfigError, match=r"--parallel-frames tunes the compiled backend; this run uses eager"):
        check_knobs(p.parse_args(["--parallel-frames"]), "eager")


def test_both_slots_run_the_compiled_modules_without_recompiling(tiny_pipe):
    e = _engine(tiny_pipe)
    with counting_compiles(e) as counter:
        run = ParallelStep(e, warmup=1, cuda_graph=False)
        pipelined(run, camera(4, [(80, 64), (64, 96)]))
    assert counter.frame_count == 3, f"{counter.frame_count} compiles for 3 modules: a slot recompiled one"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_parallel_on_a_gpu_uses_two_streams_and_still_equals_graphed():
    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
    frames = camera(8, [(96, 80), (64, 64), (1280, 720)])
    for cfg in ("none", "full"):
        want = _run(GraphedStep, pipe, frames, cfg=cfg, device="cuda", dtype=torch.float16)
        got = _run(ParallelStep, pipe, frames, cfg=cfg, device="cuda", dtype=torch.float16)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
    run = ParallelStep(_engine(pipe, device="cuda", dtype=torch.float16), warmup=1)
    try:
        assert run.graphs is not None and len(run.graphs) == 2 and run.graph is run.graphs[0]
        assert len({s.cuda_stream for s in run.streams}) == 2
    finally:
        run.close()


def test_the_compiled_backend_refuses_before_it_compiles(tiny_pipe, monkeypatch):
    """The check runs before torch.compile (minutes on a real UNet), on the engine as configured."""
    from dreamcam.backends.compiled.backend import CompiledBackend

    for kwargs, match in [({"t_index": (20, 40)}, "2 steps keep each frame's latents"), ({}, "do not combine")]:
        e = _engine(tiny_pipe, **kwargs)
        monkeypatch.setattr(e, "device", torch.device("cuda"))  # past the backend's own device check
        with pytest.raises(ConfigError, match=match):
            CompiledBackend(e, compile=False, parallel_frames=True, overlap_stages="t_index" not in kwargs)
        assert e.unet is tiny_pipe.unet  # nothing was swapped in
