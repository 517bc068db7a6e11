"""The two-deep submit / collect path of the backends, on the CPU with the tiny pipeline.

Each test runs a frame sequence two ways, one frame at a time and pipelined (frame k+1
submitted before frame k is collected), on two engines with the same set-up, and asks for the
same bytes: the stream batch carries latents from frame to frame, so a frame run out of order,
twice or with another frame's input changes every later output. On the CPU the graphed path
runs without streams, events or pinning: what is tested is its slot logic, framing, order and
results; the stream ordering itself needs the GPU test at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends.compiled.step import DEPTH, FramePipeline, GraphedStep
from dreamcam.backends.eager import EagerBackend
from dreamcam.engine.framing import fit_torch
from dreamcam.errors import ConfigError
from dreamcam.frames import FIT_MODES, fit

from cpu_frame_path import SIZE, camera, engine, pipelined


class CpuGraphed(FramePipeline):
    """The compiled backend's API (FramePipeline over a GraphedStep) on a CPU engine: the
    compiled and TensorRT backends themselves refuse a CPU engine."""

    name = "cpu-graphed"

    def __init__(self, eng) -> None:
        self._closed = False
        self._run = GraphedStep(eng, warmup=2)


def test_eager_pipelined_equals_one_at_a_time_with_any_size_input_and_live_changes(tiny_pipe):
    ref, eng = engine(tiny_pipe), engine(tiny_pipe)
    frames = camera(6, [(96, 80), (96, 80), (SIZE, SIZE), (50, 120)])

    def change(e):
        e.set_strength(0.8)
        e.set_seed(11)

    want = []
    for k, f in enumerate(frames):
        if k == 3:
            change(ref)
        want.append(ref.img2img(fit(f, SIZE, SIZE, "letterbox")))
    with EagerBackend(eng) as b:
        assert b.overlaps is False
        got = pipelined(b, frames, "letterbox", changes={3: lambda: change(eng)})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_graphed_step_pipelined_equals_its_synchronous_process_bit_for_bit(tiny_pipe):
    """Engine-size frames: no framing at all, so both paths must agree exactly, with the
    engine's carried state (latents in flight, residual noise) as the synchronous path leaves it."""
    frames = camera(6, [(SIZE, SIZE)])
    sync = GraphedStep(engine(tiny_pipe), warmup=2)
    want = [sync.process(f) for f in frames]
    run = GraphedStep(engine(tiny_pipe), warmup=2)
    assert run.overlaps is False and run.stream is None
    got = pipelined(run, frames)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not all(np.array_equal(want[0], w) for w in want[1:])  # the frames do differ
    for a, b in zip(sync._slots[0].out_np, run._slots[0].out_np):  # same last frame left in slot 0
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", FIT_MODES)
def test_graphed_step_frames_any_size_on_the_device_like_frames_fit(tiny_pipe, mode):
    """Sizes change mid-stream (both slots re-allocate); each output equals the eager engine fed
    `fit_torch`'s framing exactly, and that framing is `frames.fit`'s to interpolation round-off."""
    frames = camera(5, [(96, 80), (SIZE, SIZE), (50, 120), (96, 80), (160, 90)], seed=1)
    ref, run = engine(tiny_pipe), GraphedStep(engine(tiny_pipe), warmup=2)
    for k, f in enumerate(frames):
        run.submit(f, mode)
        framed = fit_torch(torch.from_numpy(f), SIZE, SIZE, mode).numpy()
        np.testing.assert_array_equal(run.step.frames_in[0].numpy(), framed)  # CPU: computed in submit
        cv = fit(f, SIZE, SIZE, mode)
        diff = np.abs(framed.astype(np.int16) - cv.astype(np.int16))
        if f.shape[:2] == (SIZE, SIZE):
            assert diff.max() == 0
        else:
            assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (mode, f.shape, diff.mean())
        if mode == "letterbox":  # the bars: black in the same rows and columns, exactly
            np.testing.assert_array_equal(framed.max(axis=(1, 2)) == 0, cv.max(axis=(1, 2)) == 0)
            np.testing.assert_array_equal(framed.max(axis=(0, 2)) == 0, cv.max(axis=(0, 2)) == 0)
        np.testing.assert_array_equal(run.collect(), ref.img2img(framed))
        assert run._slots[k % DEPTH].raw_np.shape == (1, *f.shape)


def test_order_is_kept_and_a_third_submit_is_refused(tiny_pipe):
    frames = camera(4, [(80, 64)], seed=2)
    ref = GraphedStep(engine(tiny_pipe), warmup=2)
    want = [ref.process(fit_torch(torch.from_numpy(f), SIZE, SIZE).numpy()) for f in frames]
    for backend in (CpuGraphed(engine(tiny_pipe)), EagerBackend(engine(tiny_pipe))):
        with pytest.raises(RuntimeError, match="submit"):
            backend.collect()
        backend.submit(frames[0])
        backend.submit(frames[1])
        with pytest.raises(RuntimeError, match=r"2 frames are in flight.*collect\(\) one"):
            backend.submit(frames[2])
        assert backend.pending == 2
        got = [backend.collect(), backend.collect()]
        backend.submit(frames[2])
        backend.submit(frames[3])
        got += [backend.collect(), backend.collect()]
        if isinstance(backend, CpuGraphed):  # same framing as the reference: exact, in order
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
        else:  # OpenCV framing: frame by frame close to the reference, and no two swapped
            for k, g in enumerate(got):
                err = [np.abs(g.astype(int) - w.astype(int)).mean() for w in want]
                assert int(np.argmin(err)) == k, err
        backend.close()


def test_bad_input_is_refused_in_one_line_and_changes_nothing(tiny_pipe):
    for backend in (CpuGraphed(engine(tiny_pipe)), EagerBackend(engine(tiny_pipe))):
        with pytest.raises(ConfigError, match=r"expected a uint8 RGB numpy frame of shape \(H, W, 3\), got float32"):
            backend.submit(np.zeros((48, 64, 3), np.float32))
        with pytest.raises(ConfigError, match=r"got uint8 \(48, 64, 4\)"):
            backend.submit(np.zeros((48, 64, 4), np.uint8))
        with pytest.raises(ConfigError, match="framing must be one of crop, letterbox, stretch; got 'fill'"):
            backend.submit(np.zeros((48, 64, 3), np.uint8), "fill")
        assert backend.pending == 0
        backend.close()
    closed = CpuGraphed(engine(tiny_pipe))
    closed.close()
    with pytest.raises(RuntimeError, match="the cpu-graphed backend is closed"):
        closed.submit(np.zeros((48, 64, 3), np.uint8))


def test_graphed_step_with_a_frame_buffer_of_two(tiny_pipe):
    """frame_buffer_size 2: each submit takes (2, h, w, 3), framed frame by frame."""
    ref, run = engine(tiny_pipe, frame_buffer_size=2), GraphedStep(engine(tiny_pipe, frame_buffer_size=2), warmup=2)
    frames = camera(6, [(90, 70)], seed=3)
    batches = [np.stack(frames[i : i + 2]) for i in range(0, 6, 2)]
    want = [ref.img2img(np.stack([fit_torch(torch.from_numpy(f), SIZE, SIZE).numpy() for f in b])) for b in batches]
    got = pipelined(run, batches)
    for g, w in zip(got, want):
        assert g.shape == (2, SIZE, SIZE, 3)
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ConfigError, match=r"shape \(2, H, W, 3\)"):
        run.submit(frames[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_compiled_backend_pipelined_follows_its_synchronous_path_and_fenced_setters(tiny_pipe):
    """On CUDA the three streams overlap; a setter after fence() must land in the next frame
    only, and device framing must agree with the CPU's."""
    from dreamcam import tiny_pipeline
    from dreamcam.backends import make_backend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
    frames = camera(6, [(96, 80), (SIZE, SIZE), (50, 120)])
    ref = engine(pipe, device="cuda", dtype=torch.float16)
    want = []
    for k, f in enumerate(frames):
        if k == 3:
            ref.set_strength(0.9)
        want.append(ref.img2img(fit_torch(torch.from_numpy(f).cuda(), SIZE, SIZE).cpu().numpy()))
    with make_backend("compiled", engine(pipe, device="cuda", dtype=torch.float16), compile=False) as b:
        assert b.overlaps is True
        got = pipelined(b, frames, changes={3: lambda: b.engine.set_strength(0.9)})
    for g, w in zip(got, want):
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 2


def _segment_stream(ptr: int) -> int:
    for seg in torch.cuda.memory_snapshot():
        if seg["address"] <= ptr < seg["address"] + seg["total_size"]:
            return seg["stream"]
    raise AssertionError(f"no CUDA segment holds address {ptr:#x}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_the_upload_buffer_belongs_to_the_copy_stream_that_writes_it(tiny_pipe):
    """A block handed out on the default stream may still be in use by queued default-stream work;
    the copy stream writing it without waiting would race. Each slot's device buffer is taken on
    the copy stream, also when a new capture size re-allocates it."""
    from dreamcam import tiny_pipeline

    e = StreamEngine(tiny_pipeline(0, device="cuda", dtype=torch.float16), [35], 64, 64, cfg_type="none",
                     device="cuda", dtype=torch.float16)
    e.prepare("a cat", seed=2)
    run = GraphedStep(e, warmup=1, cuda_graph=False)
    try:
        for size in ((64, 64), (96, 80), (50, 120), (1280, 720)):
            w, h = size
            run.submit(np.full((h, w, 3), 90, np.uint8))
            run.collect()
        for slot in run._slots:
            assert slot.raw_dev is not None
            assert _segment_stream(slot.raw_dev.data_ptr()) == run.copy_stream.cuda_stream
    finally:
        run.close()
