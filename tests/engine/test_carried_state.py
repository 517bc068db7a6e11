"""`StreamEngine.carried_state()`: the public view of what one frame leaves for the next, which the
graphed backends copy to undo their warm-up frames (`StateSnapshot`) without reaching into the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends.compiled.step import StateSnapshot


def _engine(pipe, **kw):
    return StreamEngine(pipe, [10, 30], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32, **kw)


def test_carried_state_is_the_live_tensors_a_frame_changes(tiny_pipe):
    engine = _engine(tiny_pipe)
    with pytest.raises(RuntimeError, match="prepare"):
        engine.carried_state()
    engine.prepare("a cat", guidance_scale=1.4)
    latents, residual, init, *_feedback = engine.carried_state()
    assert latents.shape == residual.shape == init.shape == (2, 4, 8, 8)
    assert init is engine.init_noise and latents[1:].data_ptr() == engine.x_t_latent_buffer.data_ptr()
    before = [t.clone() for t in (latents, residual)]
    engine.img2img(np.full((64, 64, 3), 90, np.uint8))
    assert not all(torch.equal(a, b) for a, b in zip(before, (latents, residual)))


def test_a_snapshot_undoes_frames_so_the_next_output_is_as_if_none_ran(tiny_pipe):
    ref, engine = _engine(tiny_pipe), _engine(tiny_pipe)
    for e in (ref, engine):
        e.prepare("a cat", guidance_scale=1.4, seed=3)
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    snapshot = StateSnapshot(engine)
    for _ in range(3):  # warm-up frames, as a backend runs them
        engine.img2img(255 - frame)
    snapshot.restore()
    np.testing.assert_array_equal(engine.img2img(frame), ref.img2img(frame))
