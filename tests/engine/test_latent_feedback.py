"""Latent feedback and the motion guard in the engine (engine/feedback.py), and the `stability`
umbrella knob that sets them (engine/stability.py, knobs.py).

The steadying tests use the tiny pipeline with its UNet's output layer zeroed: a real diffusers
UNet that predicts no noise, so each frame's output is a fixed function of its input and the camera
noise is all the flicker there is. With random weights the UNet's noise estimate is itself noise,
which feedback would carry from frame to frame; a trained model (docs/stability.md) estimates it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.control.controller import Controller
from dreamcam.control.presets import PresetLibrary
from dreamcam.engine.feedback import RAMP_FRAMES, LatentFeedback, motion_threshold
from dreamcam.engine.stability import FEEDBACK_MAX, SMOOTHING_MAX, stability_parts
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, STABILITY_DEFAULT, KnobError, ParamStore

SIZE = 64


@pytest.fixture(scope="module")
def still_pipe():
    """The tiny pipeline (its own copy) with a UNet that predicts no noise (see the module docstring)."""
    pipe = tiny_pipeline(seed=0)
    with torch.no_grad():
        pipe.unet.conv_out.weight.zero_()
        pipe.unet.conv_out.bias.zero_()
    return pipe


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + c) for c in (0, 2, 4)], -1)
    return ((img * 0.4 + 0.5) * 255).astype(np.uint8)


def noisy(base: np.ndarray, n: int, seed: int, sigma: float = 8.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(base + rng.normal(0, sigma, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(n)]


def make(pipe, feedback=0.0, guard=0.0, *, t_index=(25,), cfg="none") -> StreamEngine:
    e = StreamEngine(pipe, list(t_index), SIZE, SIZE, cfg_type=cfg, device="cpu", dtype=torch.float32)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    e.set_feedback(feedback)
    e.set_motion_guard(guard)
    return e


def change(outs: list[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change (the warping error of a still scene: the warp is the identity)."""
    return float(np.mean([np.abs(b.astype(float) - a).mean() for a, b in zip(outs, outs[1:])]))


# ------------------------------------------------------------------ feedback 0 is today's engine


@pytest.mark.parametrize("t_index,cfg", [((20, 40), "self"), ((25,), "none")])
def test_feedback_zero_is_todays_engine_bit_for_bit(tiny_pipe, t_index, cfg):
    """Off, the work is skipped; and the ops as a captured graph runs them (always, knob 0) change nothing."""
    today = make(tiny_pipe, t_index=t_index, cfg=cfg)
    guarded = make(tiny_pipe, 0.0, 0.7, t_index=t_index, cfg=cfg)
    graphed = make(tiny_pipe, 0.0, 0.5, t_index=t_index, cfg=cfg)
    graphed.latent_feedback.in_graph = True
    frames = noisy(scene(0), 4, 1) + noisy(scene(1), 3, 2)
    for f in frames:
        want = today.img2img(f)
        assert np.array_equal(guarded.img2img(f), want)
        assert np.array_equal(graphed.img2img(f), want)
    assert not guarded.latent_feedback.prev.any(), "feedback 0 ran the feedback work"
    assert graphed.latent_feedback.prev.any()
    assert not guarded.latent_feedback.smoothed.any(), "smoothing 0 ran the smoothing work"


def test_smoothing_zero_leaves_feedback_bit_for_bit(tiny_pipe):
    """Feedback alone, with the smoothing ops running at 0 (as a captured graph runs them), is the
    feedback engine unchanged."""
    plain = make(tiny_pipe, 0.4, 0.5)
    graphed = make(tiny_pipe, 0.4, 0.5)
    graphed.latent_feedback.in_graph = True
    for f in noisy(scene(0), 5, 1):
        assert np.array_equal(graphed.img2img(f), plain.img2img(f))


def test_txt2img_takes_no_feedback(tiny_pipe):
    a, b = make(tiny_pipe), make(tiny_pipe, 0.6, 0.5)
    b.img2img(scene(0))
    a.generator.manual_seed(5)
    b.generator.manual_seed(5)
    assert np.array_equal(a.txt2img(), b.txt2img())


# ------------------------------------------------------------------ what feedback does


def test_feedback_steadies_a_still_noisy_scene(still_pipe):
    """The denoised latent (what is decoded) changes less from frame to frame with feedback, once
    the feedback loop has settled (with this UNet, which leaves the noise in, that takes ~20 frames)."""
    frames = noisy(scene(0), 28, 1)
    change_of = {}
    for fb in (0.0, 0.5):
        e = make(still_pipe, fb, 0.5)
        e.latent_feedback.in_graph = True  # keeps the latent at feedback 0 too (and changes nothing, as tested above)
        latents = []
        for k, f in enumerate(frames):
            e.img2img(f)
            latents.append(e.latent_feedback.prev.clone())
            assert e.latent_feedback.cut.item() == (k == 0), "camera noise was taken for a scene cut"
        change_of[fb] = np.mean([(b - a).abs().mean().item() for a, b in zip(latents[20:], latents[21:])])
    assert change_of[0.5] < 0.75 * change_of[0.0], change_of


def test_the_blend_is_the_clean_blend_noised_once():
    """(1-s)*x_t + s*(a*prev + b*n) == a*((1-s)*z + s*prev) + b*n: the noise keeps its level."""
    g = torch.Generator().manual_seed(0)
    z, prev, n = (torch.randn((1, 4, 8, 8), generator=g) for _ in range(3))
    a, b = torch.tensor(0.6).view(1, 1, 1), torch.tensor(0.8).view(1, 1, 1)
    fb = LatentFeedback(1, (4, 8, 8), torch.device("cpu"), torch.float32)
    fb.set_value(0.4)
    fb.prev.copy_(prev)
    fb.gate.fill_(1.0)
    got = fb.blend(a * z + b * n, a, b, n)
    torch.testing.assert_close(got, a * (0.6 * z + 0.4 * prev) + b * n)
    assert fb.applied.item() == pytest.approx(0.4)


def test_smoothing_is_a_recursive_filter_of_the_encoded_camera_latents():
    """zs_k = (1-m)*z_k + m*zs_(k-1), noised once with the frame's own noise; feedback then
    blends prev into the smoothed latent."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.tensor(0.6).view(1, 1, 1), torch.tensor(0.8).view(1, 1, 1)
    n = torch.randn((1, 4, 8, 8), generator=g)
    zs = [torch.randn((1, 4, 8, 8), generator=g) for _ in range(4)]
    fb = LatentFeedback(1, (4, 8, 8), torch.device("cpu"), torch.float32)
    fb.set_smoothing(0.5)
    fb.gate.fill_(1.0)
    fb.score_seen.fill_(0.0)
    want = None
    for k, z in enumerate(zs):
        got = fb.blend(a * z + b * n, a, b, n)
        want = 0.5 * z + 0.5 * (want if k else fb.smoothed.new_zeros(z.shape))  # `smoothed` starts at 0 (gate forced to 1 here)
        torch.testing.assert_close(got, a * want + b * n)
        torch.testing.assert_close(fb.smoothed, want)
    prev = torch.randn((1, 4, 8, 8), generator=g)
    fb.set_value(0.4)  # turning feedback on ramps it in: the gate is forced to 1 again here
    fb.gate.fill_(1.0)
    fb.prev.copy_(prev)
    z = zs[0]
    got = fb.blend(a * z + b * n, a, b, n)
    torch.testing.assert_close(got, a * (0.6 * (0.5 * z + 0.5 * want) + 0.4 * prev) + b * n)


def test_a_cut_restarts_smoothing_from_the_new_scene(tiny_pipe):
    """From the frame of a cut on, a smoothing engine's frames are exactly those of an engine that
    never saw the old scene (the gate drops both parts to 0 on the cut and ramps them in again)."""
    old, new = noisy(scene(0), 6, 1), noisy(scene(1), 7, 2)
    seen = make(tiny_pipe, 0.0, 0.5)
    seen.set_smoothing(0.6)
    fresh = make(tiny_pipe, 0.0, 0.5)
    fresh.set_smoothing(0.6)
    for f in old:
        seen.img2img(f)
    for k, f in enumerate(new):
        assert np.array_equal(seen.img2img(f), fresh.img2img(f)), k
        assert seen.latent_feedback.cut.item() == (k == 0)


def test_a_cut_steps_the_feedback_back_and_it_ramps_in_again(tiny_pipe):
    """After a cut the guarded engine runs exactly as one that never saw the old scene: the cut
    frame takes none of the old latent, then feedback ramps in from it."""
    cut_at = 5
    frames = noisy(scene(0), cut_at, 1) + noisy(scene(7), 5, 2)
    guarded, unguarded, fresh = make(tiny_pipe, 0.6, 0.5), make(tiny_pipe, 0.6, 0.0), make(tiny_pipe, 0.6, 0.5)
    seen: list[float] = []
    guarded.scene_cut_hooks.append(lambda cut: seen.append(float(cut)))
    applied = []
    for k, f in enumerate(frames):
        got, ghosted = guarded.img2img(f), unguarded.img2img(f)
        applied.append(guarded.latent_feedback.applied.item())
        if k >= cut_at:
            want = fresh.img2img(f)
            assert np.array_equal(got, want), f"frame {k - cut_at} after the cut still holds the old scene"
            assert not np.array_equal(ghosted, want)
    # the first frame starts a scene too (nothing before it belongs to it)
    assert seen == [1.0 if k in (0, cut_at) else 0.0 for k in range(len(frames))]
    ramp = [min(i / RAMP_FRAMES, 1.0) * 0.6 for i in range(len(frames) - cut_at)]
    assert applied[cut_at:] == pytest.approx(ramp, abs=1e-6)
    assert applied[:2] == pytest.approx([0.0, 0.15])  # and it ramps in from the start


def test_turning_feedback_on_ramps_in_from_that_frame(still_pipe):
    e = make(still_pipe)
    frames = noisy(scene(0), 6, 1)
    for f in frames[:3]:
        e.img2img(f)
    e.set_feedback(0.5)
    used = []
    for f in frames[3:]:
        e.img2img(f)
        used.append(e.latent_feedback.applied.item())
    assert used == pytest.approx([0.0, 0.125, 0.25])


def test_motion_threshold_goes_from_off_to_sensitive():
    assert motion_threshold(0) == math.inf
    values = [motion_threshold(g / 10) for g in range(1, 11)]
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(0.01)


# ------------------------------------------------------------------ knobs


@pytest.mark.parametrize("setter,bad", [
    ("set_feedback", 1.0), ("set_feedback", -0.1), ("set_feedback", float("nan")), ("set_feedback", "0.5"),
    ("set_feedback", True), ("set_motion_guard", 1.5), ("set_motion_guard", -1.0),
])
def test_engine_setters_refuse_bad_values_with_one_line(tiny_pipe, setter, bad):
    e = make(tiny_pipe)
    with pytest.raises(ConfigError, match=r"must be a number between 0 and"):
        getattr(e, setter)(bad)
    assert e.feedback == 0.0 and e.motion_guard == 0.0


def test_the_knob_table_rows():
    for name in ("stability", "feedback", "motion_guard"):
        assert PARAMS[name].presettable
    assert PARAMS["feedback"].hi == FEEDBACK_MAX and PARAMS["feedback"].setter == "set_feedback"
    assert PARAMS["motion_guard"].setter == "set_motion_guard"
    store = ParamStore()
    with pytest.raises(KnobError, match=r"feedback must be between 0 and 0.9, got 0.95"):
        store.set("feedback", 0.95)
    with pytest.raises(KnobError, match=r"stability must be between 0 and 1"):
        store.set("stability", 1.2)
    assert store.get("feedback") == PARAMS["feedback"].default


def test_the_parts_defaults_follow_from_the_stability_default():
    parts = stability_parts(STABILITY_DEFAULT)
    assert {k: PARAMS[k].default for k in parts} == parts
    assert stability_parts(0) == {"smoothing": 0.0, "motion_guard": 0.0}
    ms = [stability_parts(s / 10)["smoothing"] for s in range(11)]
    assert ms == sorted(ms) and 0 < ms[-1] <= SMOOTHING_MAX
    assert PARAMS["feedback"].default == 0.0  # the umbrella leaves feedback alone


def test_stability_writes_its_parts_and_an_expert_set_later_overrides():
    store = ParamStore()
    changed = store.update({"stability": 0.8})
    assert changed == {**stability_parts(0.8), "stability": 0.8}
    store.set("smoothing", 0.1)
    assert store.get("smoothing") == 0.1 and store.get("stability") == 0.8
    store.update({"stability": 0.4, "motion_guard": 0.9})  # an expert in the same message wins too
    assert store.get("smoothing") == stability_parts(0.4)["smoothing"] and store.get("motion_guard") == 0.9
    store.set("feedback", 0.3)
    store.set("stability", 0.0)
    assert store.get("smoothing") == 0.0 and store.get("motion_guard") == 0.0
    assert store.get("feedback") == 0.3  # not one of its parts


def test_presets_carry_stability(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text("[steady]\nstability = 0.8\n\n[steady_light]\nstability = 0.8\nsmoothing = 0.2\n", encoding="utf-8")
    lib, store = PresetLibrary(path), ParamStore()
    lib.apply("steady", store)
    assert store.get("smoothing") == stability_parts(0.8)["smoothing"]
    lib.apply("steady_light", store)
    assert store.get("smoothing") == 0.2 and store.get("stability") == 0.8


def test_the_controller_applies_the_umbrella_to_the_engine(tiny_pipe):
    e = make(tiny_pipe)
    # slew 0: the knobs land on the next frame instead of gliding there over the slew time
    store = ParamStore({"prompt": "a watercolor fox", "seed": 3, "slew": 0})
    with Controller(e, store) as ctrl:
        store.set("stability", 0.8)
        ctrl.apply()
        assert (e.smoothing, e.motion_guard) == (stability_parts(0.8)["smoothing"], stability_parts(0.8)["motion_guard"])
        store.set("smoothing", 0.25)
        store.set("feedback", 0.1)
        ctrl.apply()
        assert (e.smoothing, e.feedback) == (0.25, 0.1)


# ------------------------------------------------------------------ on a trained model


def test_on_the_toy_model_stability_steadies_the_picture_which_still_follows_the_input():
    """The toy model denoises (a small trained pipeline): over a still scene with camera noise the
    decoded picture flickers less at stability 0.8 than at 0 and follows the input as closely;
    feeding the denoised picture back instead (feedback) drifts it away from the input."""
    from dreamcam import load_pipeline

    pipe = load_pipeline("toy", device="cpu", dtype=torch.float32, progress=False)
    size = 128
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = (np.stack([x, y, 1 - x * y], -1) * 220 + 20).astype(np.uint8)
    frames = [(base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(14)]
    flicker, likeness = {}, {}
    for name, knobs in (("off", {}), ("stability 0.8", stability_parts(0.8)), ("feedback 0.6", {"feedback": 0.6, "motion_guard": 0.5})):
        e = StreamEngine(pipe, [35], size, size, cfg_type="none", device="cpu", dtype=torch.float32)
        e.prepare("", seed=2)
        e.set_strength(0.5)
        for knob, value in knobs.items():
            getattr(e, f"set_{knob}")(value)
        outs = [e.img2img(f) for f in frames]
        flicker[name] = change(outs[6:])
        likeness[name] = np.mean([np.corrcoef(o.mean(-1).ravel(), base.mean(-1).ravel())[0, 1] for o in outs[6:]])
    assert flicker["stability 0.8"] < 0.7 * flicker["off"], flicker
    assert likeness["stability 0.8"] > likeness["off"] - 0.01, likeness
    assert likeness["feedback 0.6"] < likeness["off"] - 0.05, likeness
