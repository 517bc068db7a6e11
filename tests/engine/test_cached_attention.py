"""Cached attention (engine/attention.py) on the real tiny diffusers UNet, eager, on the CPU:
off is the engine of before bit for bit, the bank is allocated once and written in place, a reset
forgets the old scene, the banked processor computes attention over current + banked keys, and
the knobs refuse bad values with one line."""

from __future__ import annotations

import pytest
import torch
from conftest import random_frames
from dreamcam import StreamEngine
from dreamcam.engine.attention import MAX_BANK_FRAMES, BankedAttnProcessor, router_for, self_attention_layers
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, KnobError

SIZE = 64


def _engine(pipe, t_index=(20, 40), cfg="self", **kw):
    e = StreamEngine(pipe, list(t_index), SIZE, SIZE, cfg_type=cfg, device="cpu", dtype=torch.float32, **kw)
    e.prepare("a watercolor fox", seed=7)
    return e


def _run(engine, frames):
    return [engine.process(x) for x in frames]


@pytest.mark.parametrize("cfg", ["self", "full", "initialize"])
def test_off_is_the_engine_of_before_bit_for_bit(tiny_pipe, cfg):
    """Knobs touched while the bank is 0, or the bank switched on and off again before a frame:
    the UNet runs its own processors and every output is exactly the untouched engine's."""
    frames = random_frames(5, SIZE, SIZE)
    ref = _run(_engine(tiny_pipe, cfg=cfg), frames)
    own = {n: m.processor for n, m in self_attention_layers(tiny_pipe.unet)}

    touched = _engine(tiny_pipe, cfg=cfg)
    touched.set_attn_refresh(3)
    touched.set_attn_fusion(0.7)
    assert touched.attention_bank is None  # nothing allocated or installed while off
    toggled = _engine(tiny_pipe, cfg=cfg)
    toggled.set_attn_bank(2)
    assert not all(m.processor is own[n] for n, m in self_attention_layers(tiny_pipe.unet))
    toggled.set_attn_bank(0)
    assert all(m.processor is own[n] for n, m in self_attention_layers(tiny_pipe.unet))
    for engine in (touched, toggled):
        assert all(torch.equal(a, b) for a, b in zip(_run(engine, frames), ref))


def test_on_changes_the_output_and_off_again_restores_the_processors(tiny_pipe):
    frames = random_frames(4, SIZE, SIZE)
    own = [m.processor for _, m in self_attention_layers(tiny_pipe.unet)]
    ref = _run(_engine(tiny_pipe), frames)
    e = _engine(tiny_pipe)
    e.set_attn_bank(2)
    assert all(isinstance(m.processor, BankedAttnProcessor) for _, m in self_attention_layers(tiny_pipe.unet))
    got = _run(e, frames)
    # nothing banked yet: no slot attended, fusion off (equal up to the rounding of a longer softmax)
    assert (got[0] - ref[0]).abs().max() < 1e-5
    assert (got[-1] - ref[-1]).abs().max() > 2e-5  # the random tiny UNet barely uses its attention
    e.set_attn_bank(0)
    assert [m.processor for _, m in self_attention_layers(tiny_pipe.unet)] == own


def test_engines_sharing_a_unet_each_use_their_own_bank_or_none(tiny_pipe):
    """The processors sit on the shared UNet; each engine points them at its own bank (or at
    nothing) before its UNet call, so an engine with the bank off next to one with it on (or
    one dropped with it on) still computes exactly the output without the bank."""
    frames = random_frames(4, SIZE, SIZE)
    ref = _run(_engine(tiny_pipe), frames)
    solo = _engine(tiny_pipe)
    solo.set_attn_bank(2)
    solo_out = _run(solo, frames)
    on, off = _engine(tiny_pipe), _engine(tiny_pipe)
    on.set_attn_bank(2)
    pairs = [(on.process(x), off.process(x)) for x in frames]
    assert all(torch.equal(a, b) for (_, a), b in zip(pairs, ref))
    assert all(torch.equal(a, b) for (a, _), b in zip(pairs, solo_out))
    on.set_attn_bank(0)
    solo.set_attn_bank(0)


def test_banked_attention_over_its_own_keys_is_plain_attention(tiny_pipe):
    """Softmax over the keys twice (this frame's and the same banked again) weighs every value
    twice as much, so the result is plain self-attention: checks the concatenation, the row
    layout (bank row r = batch row r) and the mask (unfilled slots add nothing)."""
    e = _engine(tiny_pipe)
    e.set_attn_bank(1)
    bank = e.attention_bank
    _, attn = self_attention_layers(tiny_pipe.unet)[0]
    layer = bank.layers[0]
    torch.manual_seed(0)
    x = torch.randn(bank.rows, layer.tokens, attn.to_q.in_features)
    router = router_for(tiny_pipe.unet)
    with torch.no_grad():
        router.bank = None  # the layer's own processor
        ref = attn(x)
        router.bank = bank
        bank.control.frames.fill_(1)
        bank.control.mask.zero_()
        bank.control.write.zero_()
        alone = attn(x)  # nothing attended in the bank
        layer.k[0].copy_(attn.to_k(x))
        layer.v[0].copy_(attn.to_v(x))
        bank.control.mask[0] = True
        doubled = attn(x)
        layer.k[0, 1:].add_(5.0)  # other rows' bank: a row reads only its own bank row
        row0 = attn(x)[0]
    e.set_attn_bank(0)
    assert (alone - ref).abs().max() < 1e-5
    assert (doubled - ref).abs().max() < 1e-5
    assert (row0 - ref[0]).abs().max() < 1e-5


def test_bank_tensors_are_allocated_once_and_written_in_place(tiny_pipe):
    e = _engine(tiny_pipe)
    e.set_attn_bank(4)
    bank = e.attention_bank
    ptrs = [t.data_ptr() for t in bank.tensors()]
    frames = random_frames(6, SIZE, SIZE)
    for i, x in enumerate(frames):
        e.process(x)
        e.set_attn_bank([1, 2, 3, 4, 2, 0][i])
        e.set_attn_refresh(1 + i % 3)
        e.set_attn_fusion(i / 10)
        e.reset_attention_bank()
        e.set_attn_bank(3)
        assert e.attention_bank is bank
        assert [t.data_ptr() for t in bank.tensors()] == ptrs
    assert bank.layers[0].k.shape[0] == MAX_BANK_FRAMES
    assert bank.layers[0].k.shape[1] == e.unet_batch_size


def test_the_ring_fills_one_slot_per_refresh(tiny_pipe):
    e = _engine(tiny_pipe)
    e.set_attn_bank(2)
    e.set_attn_refresh(3)
    c = e.attention_bank.control
    masks, writes = [], []
    for x in random_frames(8, SIZE, SIZE):
        e.process(x)
        masks.append(c.mask.tolist())
        writes.append(c.write.tolist())
    t, f = True, False
    # refresh at frames 0, 3, 6 into slots 0, 1, 0; frame k attends to the slots filled before it
    assert writes == [[t, f, f, f], [f] * 4, [f] * 4, [f, t, f, f], [f] * 4, [f] * 4, [t, f, f, f], [f] * 4]
    assert masks[0] == [f] * 4 and masks[1] == [t, f, f, f] and masks[4] == [t, t, f, f] and masks[7] == [t, t, f, f]


def test_reset_forgets_the_old_scene(tiny_pipe):
    """One step, cfg none: the bank is the only state one frame leaves for the next. After a
    reset, the new scene comes out exactly as from an engine that never saw the old one."""
    old, new = random_frames(4, SIZE, SIZE, seed=1), random_frames(4, SIZE, SIZE, seed=2)
    cut = _engine(tiny_pipe, t_index=(35,), cfg="none")
    fresh = _engine(tiny_pipe, t_index=(35,), cfg="none")
    for e in (cut, fresh):
        e.set_attn_bank(2)
        e.set_attn_fusion(0.5)
    _run(cut, old)
    bank = cut.attention_bank
    assert any(t.abs().sum() > 0 for t in bank.io_tensors())
    cut.reset_attention_bank()
    assert all(t.abs().sum() == 0 for t in bank.io_tensors()) and not bank.control.mask.any()
    assert all(torch.equal(a, b) for a, b in zip(_run(cut, new), _run(fresh, new)))


def test_the_stream_batch_rows_bank_their_own_step(tiny_pipe):
    """Each UNet batch row (steps, and RCFG's unconditional rows) has its own bank row."""
    e = _engine(tiny_pipe, t_index=(10, 25, 40), cfg="full")
    e.set_attn_bank(1)
    for x in random_frames(3, SIZE, SIZE):
        e.process(x)
    k = e.attention_bank.layers[-1].k[0]  # past a cross-attention: unconditional and conditional rows differ
    assert k.shape[0] == e.unet_batch_size == 6
    rows = [k[r] for r in range(6)]
    assert all(not torch.equal(rows[a], rows[b]) for a in range(6) for b in range(a + 1, 6))


def test_knobs_refuse_bad_values_with_one_line(tiny_pipe):
    e = _engine(tiny_pipe)
    for setter, bad in (("set_attn_bank", 5), ("set_attn_bank", -1), ("set_attn_bank", 1.5), ("set_attn_bank", True),
                        ("set_attn_refresh", 0), ("set_attn_refresh", 17), ("set_attn_fusion", 1.5),
                        ("set_attn_fusion", float("nan")), ("set_attn_fusion", "0.5")):
        with pytest.raises(ConfigError) as err:
            getattr(e, setter)(bad)
        assert "\n" not in str(err.value) and "attn_" in str(err.value)
    for name, bad in (("attn_bank", 5), ("attn_refresh", 0), ("attn_fusion", -0.1)):
        with pytest.raises(KnobError):
            PARAMS[name].validate(bad)
    assert PARAMS["attn_bank"].default == 0 and PARAMS["attn_fusion"].default == 0.0
    sequential = _engine(tiny_pipe, use_denoising_batch=False)
    with pytest.raises(ConfigError, match="stream batch"):
        sequential.set_attn_bank(2)


@pytest.fixture(autouse=True)
def _own_processors_back(tiny_pipe):
    """The session's tiny pipeline is shared: every test leaves its UNet's processors as it found them."""
    own = [m.processor for _, m in self_attention_layers(tiny_pipe.unet)]
    yield
    router = router_for(tiny_pipe.unet, create=False)
    if router is not None:
        router.uninstall()
    assert [m.processor for _, m in self_attention_layers(tiny_pipe.unet)] == own


def test_a_scene_cut_seen_by_the_motion_guard_forgets_the_bank(tiny_pipe):
    """The motion guard (engine/feedback.py) calls the engine's scene-cut hooks with its device
    `cut` flag; cached attention registers one, so after a cut no slot of the old scene is
    attended and the new scene comes out as from an engine that never saw the old one (with
    feedback 0 the bank is the only state a frame leaves, at one step and cfg none)."""
    still = random_frames(1, SIZE, SIZE, seed=1)[0]
    old = [still + 0.01 * torch.randn_like(still) for _ in range(4)]
    new = random_frames(3, SIZE, SIZE, seed=2)
    cut, fresh = (_engine(tiny_pipe, t_index=(35,), cfg="none") for _ in range(2))
    for e in (cut, fresh):
        e.set_motion_guard(0.5)
        e.set_attn_bank(2)
    assert cut.reset_attention_bank_on in cut.scene_cut_hooks
    _run(cut, old)
    c = cut.attention_bank.control
    assert c.mask.tolist()[:2] == [True, True]  # the still scene fills both slots
    got = []
    for x in new:
        got.append(cut.process(x))
        if len(got) == 1:
            assert not c.mask.any()  # the cut frame attends to nothing banked
    ref = _run(fresh, new)
    assert all((a - b).abs().max() < 1e-6 for a, b in zip(got, ref))
