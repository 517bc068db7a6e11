"""StreamEngine behaviour beyond the peer: frame buffers, live parameters, input checks."""

import logging

import numpy as np
import pytest
import torch

from conftest import random_frames
from dreamcam import ConfigError, StreamEngine, strength_to_t_index_list

SIZE = 64


def make_engine(pipe, t_index=(20, 40), **kw):
    prep = kw.pop("prep", {})
    engine = StreamEngine(pipe, list(t_index), SIZE, SIZE, device="cpu", dtype=torch.float32, **kw)
    engine.prepare("a watercolor fox", **{"seed": 3, "guidance_scale": 1.3, **prep})
    return engine


def buffer_ptrs(engine):
    return {
        name: getattr(engine, name).data_ptr()
        for name in ("init_noise", "stock_noise", "prompt_embeds", "alpha_prod_t_sqrt", "beta_prod_t_sqrt", "c_skip", "c_out", "_x_batch", "_timesteps")
    }


@pytest.mark.parametrize("cfg", ["none", "self", "initialize", "full"])
def test_frame_buffer_equals_one_frame_at_a_time(tiny_pipe, cfg):
    """With F frames per batch, every frame follows the trajectory it has with F = 1."""
    steps = (10, 25, 40)
    one = make_engine(tiny_pipe, steps, cfg_type=cfg)
    two = make_engine(tiny_pipe, steps, cfg_type=cfg, frame_buffer_size=2)
    assert torch.equal(two.init_noise[::2], one.init_noise) and torch.equal(two.init_noise[1::2], one.init_noise)
    frames = random_frames(12, SIZE, SIZE)
    outs_one = [one.process(x) for x in frames]
    outs_two = [two.process(torch.cat(frames[i : i + 2])) for i in range(0, 12, 2)]
    lag = len(steps) - 1
    for m in range(lag, 6):
        for j in range(2):
            frame = 2 * (m - lag) + j
            ref = outs_one[frame + lag]
            assert (outs_two[m][j : j + 1] - ref).abs().max().item() <= 1e-4, (m, j)


def test_frame_buffer_sequential_path(tiny_pipe):
    engine = make_engine(tiny_pipe, (10, 30), cfg_type="self", use_denoising_batch=False, do_add_noise=False, frame_buffer_size=3)
    y = engine.process(torch.cat(random_frames(3, SIZE, SIZE)))
    assert y.shape == (3, 3, SIZE, SIZE) and torch.isfinite(y).all()


def test_strength_mapping_is_monotonic_and_valid():
    for steps in (1, 2, 4):
        prev_first = -1
        for s in np.linspace(1.0, 0.0, 41):
            idx = strength_to_t_index_list(float(s), steps, 50)
            assert len(idx) == steps and all(b > a for a, b in zip(idx, idx[1:]))
            assert 0 <= idx[0] and idx[-1] < 50
            assert idx[0] >= prev_first
            prev_first = idx[0]
    assert strength_to_t_index_list(1.0, 4, 50)[0] == 0
    assert strength_to_t_index_list(0.0, 1, 50) == [49]
    with pytest.raises(ConfigError, match="between 0 and 1"):
        strength_to_t_index_list(1.5, 1)


def test_live_changes_apply_at_next_frame_without_reallocation(tiny_pipe):
    engine = make_engine(tiny_pipe, (35,), cfg_type="self")
    frames = random_frames(4, SIZE, SIZE)
    before = buffer_ptrs(engine)
    engine.process(frames[0])
    base = engine.process(frames[1])

    def changed_output(change):
        ref = make_engine(tiny_pipe, (35,), cfg_type="self")
        ref.process(frames[0])
        change(ref)
        return ref.process(frames[1])

    for change in (
        lambda e: e.set_strength(0.9),
        lambda e: e.set_prompt("a neon city at night"),
        lambda e: e.set_seed(1234),
        lambda e: e.set_guidance(3.0),
        lambda e: e.set_delta(0.2),
    ):
        out = changed_output(change)
        assert (out - base).abs().max().item() > 1e-3
    engine.set_strength(0.9)
    engine.set_prompt("a neon city at night")
    engine.set_seed(1234)
    engine.process(frames[2])
    assert buffer_ptrs(engine) == before


def test_set_prompt_matches_prepare_with_that_prompt(tiny_pipe):
    a = make_engine(tiny_pipe, (30,), cfg_type="none")
    a.set_prompt("a marble statue")
    b = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none")
    b.prepare("a marble statue", seed=3, guidance_scale=1.3)
    x = random_frames(1, SIZE, SIZE)[0]
    assert torch.equal(a.process(x), b.process(x))


def test_strength_change_matches_prepared_schedule(tiny_pipe):
    a = make_engine(tiny_pipe, (10, 30), cfg_type="none")
    a.set_strength(0.25)
    target = strength_to_t_index_list(0.25, 2, 50)
    assert a.t_index_list == target
    b = make_engine(tiny_pipe, target, cfg_type="none")
    for x in random_frames(3, SIZE, SIZE):
        assert torch.equal(a.process(x), b.process(x))


def test_uint8_round_trip_and_txt2img(tiny_pipe):
    engine = make_engine(tiny_pipe, (30,), cfg_type="none")
    frame = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = engine.img2img(frame)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == frame.shape
    out_t = engine.img2img(torch.from_numpy(frame))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == frame.shape
    img = engine.txt2img()
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8


def test_similarity_filter_skips_identical_frames(tiny_pipe):
    engine = make_engine(tiny_pipe, (30,), cfg_type="none")
    engine.enable_similar_image_filter(threshold=0.9, max_skip_frame=3)
    x = random_frames(1, SIZE, SIZE)[0]
    outs = [engine.process(x)] + [engine.process(x.clone()) for _ in range(12)]
    skipped = sum(b is a for a, b in zip(outs, outs[1:]))
    assert engine.similarity_filter.skipped_total == skipped
    # identical frames are always skipped, but never more than max_skip_frame + 1 in a row
    assert skipped == 12 - 12 // 5
    other = engine.process(random_frames(1, SIZE, SIZE, seed=77)[0])
    assert other is not outs[-1]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": 100}, "multiple of 8"),
        ({"height": 0}, "multiple of 8"),
        ({"cfg_type": "half"}, "cfg_type must be one of"),
        ({"t_index_list": [30, 10]}, "strictly increasing"),
        ({"t_index_list": []}, "at least one index"),
        ({"frame_buffer_size": 0}, "frame_buffer_size"),
    ],
)
def test_bad_engine_arguments(tiny_pipe, kwargs, message):
    args = {"t_index_list": [30], "width": SIZE, "height": SIZE, **kwargs}
    with pytest.raises(ConfigError, match=message):
        StreamEngine(tiny_pipe, **args)


def test_t_index_outside_schedule(tiny_pipe):
    engine = StreamEngine(tiny_pipe, [10, 60], SIZE, SIZE)
    with pytest.raises(ConfigError, match=r"lie in \[0, 50\)"):
        engine.prepare("x", num_inference_steps=50)


def test_bad_live_values(tiny_pipe):
    engine = make_engine(tiny_pipe, (30,))
    ptrs = buffer_ptrs(engine)
    with pytest.raises(ConfigError):
        engine.set_strength(-0.1)
    with pytest.raises(ConfigError):
        engine.set_guidance(float("nan"))
    with pytest.raises(ConfigError):
        engine.set_seed("abc")
    with pytest.raises(ConfigError, match="shape"):
        engine.init_noise = torch.zeros(3, 4, 8, 8)
    with pytest.raises(ConfigError, match="process expects"):
        engine.process(torch.zeros(1, 3, 32, 32))
    assert buffer_ptrs(engine) == ptrs and engine.t_index_list == [30]


def test_long_prompt_is_truncated_with_one_warning(tiny_pipe, caplog):
    engine = make_engine(tiny_pipe, (30,), cfg_type="none")
    with caplog.at_level(logging.WARNING):
        engine.set_prompt("a very long prompt " * 40)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "the rest is ignored" in warnings[0].getMessage()
