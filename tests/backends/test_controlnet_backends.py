"""ControlNets on the graphed frame path (compiled / TensorRT backends' GraphedStep), on the CPU.

On the CPU the graphed path runs without streams, graphs or compilation: what is tested is that
the control images are fed outside the step (once per frame, before it), that the warm-up
frames leave no control image behind, and that the ControlNet runs whatever its scale (the graph
mode: no host decision per value) yet a scale of 0 still gives the frames without ControlNet.
The compiled backend itself (torch.compile'd ControlNet in the captured CUDA graph) is the GPU
test at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends.compiled.step import FramePipeline, GraphedStep, StateSnapshot
from dreamcam.backends.eager import EagerBackend
from dreamcam.engine.controlnet import ControlStack, ControlUnit
from dreamcam.engine.preprocessors import Canny, SoftEdge
from dreamcam.models.controlnet import tiny_controlnet

from cpu_frame_path import SIZE, camera, pipelined


class CpuGraphed(FramePipeline):
    name = "cpu-graphed"

    def __init__(self, eng) -> None:
        self._closed = False
        eng.control.skip_zero = False  # as the compiled backend sets it
        self._run = GraphedStep(eng, warmup=2)


@pytest.fixture(scope="module")
def net(tiny_pipe):
    return tiny_controlnet(tiny_pipe.unet)


def make(pipe, net, scale=1.0, control=True):
    stack = ControlStack([ControlUnit(net, {"canny": Canny(), "softedge": SoftEdge()}, scale=scale)]) if control else None
    e = StreamEngine(pipe, [20, 40], SIZE, SIZE, cfg_type="self", control=stack)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    return e


def test_graphed_path_feeds_control_images_as_the_eager_one(tiny_pipe, net):
    # engine-size frames: the two paths frame other sizes with OpenCV and torch, which may differ
    # by a level here and there, and a Canny threshold turns that into another edge
    frames = camera(5, [(SIZE, SIZE)])
    ref = make(tiny_pipe, net)
    with EagerBackend(ref) as b:
        want = pipelined(b, frames, changes={3: lambda: ref.set_preprocessor("softedge")})
    eng = make(tiny_pipe, net)
    with CpuGraphed(eng) as g:
        got = pipelined(g, frames, changes={3: lambda: eng.set_preprocessor("softedge")})
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert not np.array_equal(want[2], make_plain_out(tiny_pipe, frames)[2])  # the ControlNet steers


def make_plain_out(pipe, frames):
    with EagerBackend(make(pipe, None, control=False)) as b:
        return pipelined(b, frames, "crop")


def test_graph_mode_scale_zero_runs_the_controlnet_and_gives_the_frames_without_it(tiny_pipe, net):
    frames = camera(4, [(SIZE, SIZE)])
    eng = make(tiny_pipe, net, scale=0.0)
    calls = []
    hook = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        with CpuGraphed(eng) as g:
            got = pipelined(g, frames)
    finally:
        hook.remove()
    assert len(calls) >= len(frames)
    want = make_plain_out(tiny_pipe, frames)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_state_snapshot_restores_the_control_images(tiny_pipe, net):
    eng = make(tiny_pipe, net)
    images = eng.control.units[0].images
    before = images.clone()
    snap = StateSnapshot(eng)
    eng.feed_control(torch.rand(1, 3, SIZE, SIZE) * 2 - 1)
    assert not torch.equal(images, before)
    snap.restore()
    assert torch.equal(images, before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_compiled_backend_runs_the_controlnet_in_the_graph_and_takes_scale_changes_live():
    """GPU: the compiled backend with a tiny ControlNet equals the eager backend (fp16
    tolerance), and a scale change applies at the next frame with the same captured graph."""
    from dreamcam import tiny_pipeline
    from dreamcam.backends.compiled.backend import CompiledBackend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
    cn = tiny_controlnet(pipe.unet)

    def engine(scale):
        stack = ControlStack([ControlUnit(cn, {"canny": Canny(), "softedge": SoftEdge()}, scale=scale)])
        e = StreamEngine(pipe, [30], 256, 256, cfg_type="none", control=stack)
        e.prepare("a fox", seed=3)
        return e

    frame = camera(1, [(256, 256)])[0]
    with EagerBackend(engine(1.0)) as b:
        want = b.process(frame)
    e = engine(1.0)
    with CompiledBackend(e, warmup=2) as c:
        graph = c._run.graph
        got = c.process(frame)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 3
        c.fence()
        e.set_control_scale(0.0)
        off = c.process(frame)
        assert c._run.graph is graph and not np.array_equal(off, got)
    with EagerBackend(engine(0.0)) as b:
        plain = b.process(frame)
    assert np.abs(off.astype(int) - plain.astype(int)).max() <= 3
