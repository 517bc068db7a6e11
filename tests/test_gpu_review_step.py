"""Regression tests from the review of the GPU-only frame path (backends/step.py, bench_profile.py).

The first runs on the CPU: a compiled module guards on its input's strides, which the CPU
shows with dynamo's own compile counter. The second needs CUDA streams and is marked `gpu`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamcam import StreamEngine
from dreamcam.backends.compiled.step import DeviceFrameStep, GraphedStep, TinyVaeCalls, swap_modules


def _engine(pipe, device: str = "cpu", dtype=torch.float32) -> StreamEngine:
    e = StreamEngine(pipe, [35], 64, 64, cfg_type="none", device=device, dtype=dtype)
    e.prepare("a cat", seed=2)
    return e


def test_stage_times_feed_the_compiled_encoder_what_the_frame_step_feeds_it(tiny_pipe):
    """`bench --profile` times each stage with the backend's compiled modules: its encoder input
    must have the frame step's layout, or the encoder is compiled a second time (a cold compile
    inside the lent GPU's profile row) and the stage timed is not the one the frames run."""
    from torch._dynamo.testing import CompileCounter

    from dreamcam.bench.profile import stage_times

    e = _engine(tiny_pipe)
    torch._dynamo.reset()
    counter = CompileCounter()
    try:
        encoder = torch.compile(e.vae.encoder, backend=counter, dynamic=False)
        with swap_modules(e, e.unet, TinyVaeCalls(e.vae, encoder, e.vae.decoder)):
            DeviceFrameStep(e)()
            assert counter.frame_count == 1
            stage_times(e, n=1)
        assert counter.frame_count == 1, "stage_times recompiled the encoder: its input layout differs"
    finally:
        torch._dynamo.reset()


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

    e = _engine(tiny_pipeline(0, device="cuda", dtype=torch.float16), "cuda", torch.float16)
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
