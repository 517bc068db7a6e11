"""Prompt and seed cross-fades: gradual, monotonic, exact at the end, buffers kept in place."""

from __future__ import annotations

import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.control.controller import Controller, slerp
from dreamcam.knobs import ParamStore

SIZE = 64


class ManualClock:
    """Seconds that move only when the test says so (a seam Controller offers for timing)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(tiny_pipe):
    engine = StreamEngine(tiny_pipe, [35], SIZE, SIZE, cfg_type="full")
    engine.prepare("a cat", negative_prompt="", guidance_scale=1.5, seed=2)
    store = ParamStore({"prompt": "a cat", "transition": 1.0, "seed": 2})
    clock = ManualClock()
    with Controller(engine, store, clock=clock) as ctrl:
        yield engine, store, ctrl, clock


def test_prompt_cross_fade_moves_monotonically_and_lands_exactly(rig):
    engine, store, ctrl, clock = rig
    ptr = engine.prompt_embeds.data_ptr()
    start = engine.prompt_embeds.clone()
    target_cond, target_uncond = engine.encode_prompt("a dog in the snow", "ugly")
    target = start.clone()
    target[: engine.uncond_rows] = target_uncond.expand(engine.uncond_rows, -1, -1)
    target[engine.uncond_rows :] = target_cond.expand(engine.batch_size, -1, -1)
    store.update({"prompt": "a dog in the snow", "negative_prompt": "ugly"})
    assert ctrl.wait_encoded(10)
    distances = []
    for _ in range(12):  # 12 frames 0.1 s apart over a 1 s transition
        ctrl.apply()
        distances.append((engine.prompt_embeds - target).norm().item())
        clock.now += 0.1
    assert distances[0] == pytest.approx((start - target).norm().item())  # first frame: fade starts
    assert all(b < a for a, b in zip(distances[:10], distances[1:11]))  # strictly closer each frame
    assert distances[5] == pytest.approx(distances[0] / 2, rel=1e-4)  # linear in time
    assert distances[-1] == 0.0 and not ctrl.transitioning
    assert engine.prompt_embeds.data_ptr() == ptr
    assert (engine.prompt, engine.negative_prompt) == ("a dog in the snow", "ugly")


def test_new_prompt_mid_fade_starts_from_where_it_is(rig):
    engine, store, ctrl, clock = rig
    store.set("prompt", "a dog")
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    clock.now += 0.5
    ctrl.apply()
    halfway = engine.prompt_embeds.clone()
    store.set("prompt", "a bird")
    assert ctrl.wait_encoded(10)
    ctrl.apply()  # the new fade starts at the half-faded embeddings: no jump
    torch.testing.assert_close(engine.prompt_embeds, halfway)
    clock.now += 1.0
    ctrl.apply()
    u = engine.uncond_rows
    torch.testing.assert_close(engine.prompt_embeds[u : u + 1], engine.encode_prompt("a bird")[0], rtol=0, atol=0)


def test_transition_from_the_same_update_is_used(rig):
    """A preset sets transition and prompt together: the fade uses the new transition."""
    engine, store, ctrl, _ = rig
    store.update({"prompt": "a dog", "transition": 0.0})
    assert ctrl.wait_encoded(10)
    ctrl.apply()
    u = engine.uncond_rows
    torch.testing.assert_close(engine.prompt_embeds[u : u + 1], engine.encode_prompt("a dog")[0], rtol=0, atol=0)


def test_seed_blend_slerps_noise_and_keeps_its_variance(rig):
    engine, store, ctrl, clock = rig
    ptr = engine.init_noise.data_ptr()
    start = engine.init_noise.clone()
    target = engine.noise_for_seed(77)
    store.set("seed", 77)
    stds, dists = [], []
    for _ in range(12):
        ctrl.apply()
        stds.append(engine.init_noise.std().item())
        dists.append((engine.init_noise - target).norm().item())
        clock.now += 0.1
    assert all(b < a for a, b in zip(dists[:10], dists[1:11]))
    # a straight line between two independent noises would shrink the std to ~0.71 halfway
    assert min(stds) > 0.9 * min(start.std().item(), target.std().item())
    mid = slerp(start, target, 0.5)
    assert (engine.init_noise - target).norm().item() == 0.0 and engine.seed == 77
    assert mid.std().item() == pytest.approx(start.std().item(), rel=0.1)
    assert engine.init_noise.data_ptr() == ptr


def test_slerp_end_points_and_parallel_rows():
    a = torch.randn(2, 4, 8, 8)
    b = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    torch.testing.assert_close(slerp(a, a, 0.3), a)
