"""Soak: a VJ typing live sends hundreds of distinct prompts (and blends, seeds, negative prompts)
with cross-fades overlapping; the live tensors the controller and engine hold must stay flat, so
prompt embeddings or fade targets never pile up over an hours-long run."""

import gc

import numpy as np
import torch

from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends import make_backend
from dreamcam.control.controller import Controller
from dreamcam.knobs import ParamStore

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
