"""Controller on the tiny pipeline: prompt changes off the frame path, setters, blending, and live
tensors that stay flat over hundreds of prompts."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends import make_backend
from dreamcam.control.controller import Controller
from dreamcam.engine.prompts import parse_prompt
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore

SIZE = 64


def make_engine(
    pipe, prompt: str = "a cat", *, cfg_type: str = "none", negative: str = "", seed: int = 2
) -> StreamEngine:
    engine = StreamEngine(pipe, [35], SIZE, SIZE, cfg_type=cfg_type)
    engine.prepare(prompt, negative_prompt=negative, guidance_scale=1.5, seed=seed)
    return engine


def frame(i: int = 0) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def rig(tiny_pipe):
    engine = make_engine(tiny_pipe)
    store = ParamStore({"prompt": "a cat", "transition": 0.0, "seed": 2, "slew": 0.0})
    with Controller(engine, store) as ctrl:
        yield engine, store, ctrl


def test_parse_prompt_syntax():
    assert parse_prompt("a cat") == [("a cat", 1.0)]
    assert parse_prompt("16:9 film still") == [("16:9 film still", 1.0)]  # no "|": used as written
    parts = parse_prompt("a cat:0.7 | a dog:0.3")
    assert [t for t, _ in parts] == ["a cat", "a dog"] and [w for _, w in parts] == pytest.approx([0.7, 0.3])
    assert parse_prompt("a cat | a dog:3") == [("a cat", 0.25), ("a dog", 0.75)]
    parts = parse_prompt("style: ink | a dog:.5")
    assert [t for t, _ in parts] == ["style: ink", "a dog"] and [w for _, w in parts] == pytest.approx([2 / 3, 1 / 3])
    for bad in ("a cat | ", "a:0 | b:0", "|".join(["x"] * 17)):
        with pytest.raises(ConfigError):
            parse_prompt(bad)


def test_prompt_transition_zero_matches_prepared_engine(rig):
    engine, store, ctrl = rig
    x = frame()
    before = engine.img2img(x)
    store.set("prompt", "a dog in the snow")
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    after = engine.img2img(x)
    reference = make_engine(engine.pipe, "a dog in the snow").img2img(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, reference)
    assert engine.prompt == "a dog in the snow"


def test_negative_prompt_reaches_unconditional_rows(tiny_pipe):
    engine = make_engine(tiny_pipe, cfg_type="full")
    store = ParamStore({"prompt": "a cat", "transition": 0.0})
    with Controller(engine, store) as ctrl:
        store.set("negative_prompt", "blurry")
        assert ctrl.wait_encoded(10)
        ctrl.apply()
        ref = make_engine(tiny_pipe, cfg_type="full", negative="blurry")
        torch.testing.assert_close(engine.prompt_embeds, ref.prompt_embeds, rtol=0, atol=0)
        x = frame(3)
        np.testing.assert_array_equal(engine.img2img(x), ref.img2img(x))


def test_weighted_blend_is_weighted_sum_of_embeddings(rig):
    engine, store, ctrl = rig
    store.set("prompt", "a cat:0.7 | a dog:0.3")
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    cat, _ = engine.encode_prompt("a cat")
    dog, _ = engine.encode_prompt("a dog")
    torch.testing.assert_close(engine.prompt_embeds[:1], 0.7 * cat + 0.3 * dog)


def test_setters_apply_at_next_frame_without_reallocation(rig):
    engine, store, ctrl = rig
    ptrs = (engine.init_noise.data_ptr(), engine.prompt_embeds.data_ptr(), engine.alpha_prod_t_sqrt.data_ptr())
    x = frame(1)
    a = engine.img2img(x)
    store.update({"strength": 0.9, "guidance": 3.0, "delta": 0.5})
    ctrl.apply()
    b = engine.img2img(x)
    assert engine.strength == pytest.approx(0.9, abs=0.02)
    assert engine.delta == 0.5
    assert not np.array_equal(a, b)
    store.set("bypass", True)
    ctrl.apply()
    assert ctrl.bypass is True
    assert ptrs == (engine.init_noise.data_ptr(), engine.prompt_embeds.data_ptr(), engine.alpha_prod_t_sqrt.data_ptr())


class WriteLog:
    """Logs `fence` calls and every engine setter call, in order."""

    def __init__(self, engine):
        self.calls = []
        for name in ("set_strength", "set_guidance", "set_delta", "set_seed", "set_prompt_embeds"):
            setattr(engine, name, self._logged(name, getattr(engine, name)))

    def _logged(self, name, setter):
        def call(*a, **kw):
            self.calls.append(name)
            return setter(*a, **kw)

        return call

    def fence(self):
        self.calls.append("fence")


def test_fence_comes_before_each_engine_write_and_only_then(tiny_pipe):
    """A fence makes the next frame wait for the frames in flight: it is called once before a call
    that writes to the engine, never on a call with nothing to apply (most frames)."""
    engine = make_engine(tiny_pipe)
    log = WriteLog(engine)
    store = ParamStore({"prompt": "a cat", "transition": 0.2, "seed": 2, "slew": 0.0})
    t = [0.0]
    with Controller(engine, store, clock=lambda: t[0]) as ctrl:
        for _ in range(3):
            ctrl.apply(log.fence)
        assert log.calls == []  # nothing changed: no fence
        store.update({"strength": 0.8, "guidance": 2.0})
        ctrl.apply(log.fence)
        assert log.calls == ["fence", "set_strength", "set_guidance"]
        log.calls.clear()
        store.set("prompt", "a dog")
        assert ctrl.wait_encoded(10)
        ctrl.apply(log.fence)  # the encoding is ready: the fade starts and writes the embeddings
        t[0] = 0.1
        ctrl.apply(log.fence)  # half-way through the fade
        t[0] = 0.3
        ctrl.apply(log.fence)  # the fade ends
        ctrl.apply(log.fence)  # nothing left to do
        assert log.calls == ["fence", "set_prompt_embeds"] * 3
        assert engine.prompt == "a dog"


def test_seed_change_instant_equals_engine_prepared_with_seed(rig):
    engine, store, ctrl = rig
    ptr = engine.init_noise.data_ptr()
    store.set("seed", 99)
    ctrl.apply()
    assert engine.seed == 99
    torch.testing.assert_close(engine.init_noise, make_engine(engine.pipe, seed=99).init_noise, rtol=0, atol=0)
    assert engine.init_noise.data_ptr() == ptr


def test_apply_never_waits_for_the_encoder(rig):
    """The text encoder is held on an event: frames must go on with the old prompt meanwhile."""
    engine, store, ctrl = rig
    encode = engine.encode_prompt
    started, release = threading.Event(), threading.Event()

    def held_encode(prompt, negative=""):
        started.set()
        release.wait(30)
        return encode(prompt, negative)

    ctrl._encoder._encode = held_encode  # instrumentation: a real encode that waits for the test
    before = engine.prompt_embeds.clone()
    store.set("prompt", "a slow prompt")
    assert started.wait(10)
    for _ in range(3):
        ctrl.apply()
        engine.img2img(frame())
    assert not release.is_set() and ctrl._encoder._busy  # those frames ran while the encoder was busy
    torch.testing.assert_close(engine.prompt_embeds, before, rtol=0, atol=0)  # old prompt kept meanwhile
    release.set()
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    torch.testing.assert_close(engine.prompt_embeds[:1], encode("a slow prompt")[0])


def test_only_the_newest_prompt_is_applied(rig):
    engine, store, ctrl = rig
    for p in ("one", "two", "three", "four"):
        store.set("prompt", p)
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    torch.testing.assert_close(engine.prompt_embeds[:1], engine.encode_prompt("four")[0], rtol=0, atol=0)
    assert engine.prompt == "four"


def test_close_is_idempotent(tiny_pipe):
    engine = make_engine(tiny_pipe)
    ctrl = Controller(engine, ParamStore())
    ctrl.close()
    ctrl.close()
    assert not ctrl._encoder._thread.is_alive()


# Hundreds of distinct prompts (and blends, seeds, negative prompts), as a VJ typing live sends
# them, with cross-fades overlapping: the live tensors the controller and engine hold must stay
# flat, so prompt embeddings or fade targets never pile up over an hours-long run.
WORDS = "cat dog neon city rain forest marble statue watercolor portrait oil glitch".split()


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_distinct_prompts_and_seeds_keep_live_tensors_flat():
    now = [0.0]
    engine = StreamEngine(tiny_pipeline(0), [30], 32, 32, cfg_type="full")
    engine.prepare("start", "", 50, 1.4, 1.0, seed=2)
    store = ParamStore({"prompt": "start", "transition": 0.05})
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    rng = np.random.default_rng(1)
    counts = {}
    with make_backend("eager", engine) as backend, Controller(engine, store, clock=lambda: now[0]) as ctl:
        for i in range(1, 121):
            words = " ".join(rng.choice(WORDS, 3))
            prompt = f"{words} {i}:0.7 | {rng.choice(WORDS)} {i}:0.3" if i % 2 else f"{words} {i}"
            update = {"prompt": prompt, "strength": float(rng.uniform(0.1, 0.9))}
            if i % 3 == 0:
                update["seed"] = int(rng.integers(0, 2**31 - 1))
            if i % 5 == 0:
                update["negative_prompt"] = f"blurry {i}"
            store.update(update)
            assert ctl.wait_encoded(10.0)
            now[0] += 0.02  # fades of 0.05 s: each new prompt and seed lands while the last still fades
            ctl.apply()
            backend.process(image)
            if i in (30, 120):
                counts[i] = live_tensors()
        assert ctl.transitioning
        now[0] += 1.0
        ctl.apply()  # the last fade ends: the engine holds the last prompt (so every one went through)
        assert engine.prompt == prompt and engine.negative_prompt == "blurry 120"
    assert ctl.rejected_prompts == 0
    # a cache of embeddings or fade targets would add at least one tensor per prompt (90 here)
    assert counts[120] - counts[30] <= 4, counts
