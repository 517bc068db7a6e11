"""Colour words steer the toy model: each tints the picture its way, a blend lands between, and a
prompt change cross-fades smoothly over the transition time (the live controller's path)."""

from __future__ import annotations

import numpy as np
import pytest

from dreamcam.control.controller import Controller
from dreamcam.knobs import ParamStore

from picture_checks import engine, mean_rgb, pattern, saturation

NEUTRAL = "a photo"


@pytest.fixture(scope="module")
def neutral_out(toy_pipe):
    return engine(toy_pipe, NEUTRAL).img2img(pattern())


def shift(pipe, prompt, neutral_out):
    return mean_rgb(engine(pipe, prompt).img2img(pattern())) - mean_rgb(neutral_out)


@pytest.mark.parametrize("word,channel", [("red", 0), ("green", 1), ("blue", 2)])
def test_a_colour_word_raises_its_channel(toy_pipe, neutral_out, word, channel):
    d = shift(toy_pipe, f"a {word} picture", neutral_out)
    others = np.delete(d, channel).mean()
    assert d[channel] - others > 10, f"{word}: mean RGB shift {d.round(1)}"


def test_warm_and_cold(toy_pipe, neutral_out):
    warm = shift(toy_pipe, "warm", neutral_out)
    cold = shift(toy_pipe, "cold tones", neutral_out)
    assert warm[0] - warm[2] > 8, f"warm: mean RGB shift {warm.round(1)}"
    assert cold[2] - cold[0] > 8, f"cold: mean RGB shift {cold.round(1)}"


@pytest.mark.parametrize("prompt", ["gray", "black and white photo"])
def test_gray_takes_the_colour_out(toy_pipe, neutral_out, prompt):
    out = engine(toy_pipe, prompt).img2img(pattern())
    assert saturation(out) < 0.6 * saturation(neutral_out)


def test_neutral_prompts_leave_the_colours(toy_pipe, neutral_out):
    for prompt in ("", "a portrait in the style of a watercolor painting"):
        d = shift(toy_pipe, prompt, neutral_out)
        assert np.abs(d).max() < 8, f"{prompt!r}: mean RGB shift {d.round(1)}"


def redness(img) -> float:
    r, g, b = mean_rgb(img)
    return float(r - (g + b) / 2)


def fade(pipe, transition: float, frames: int = 12, prompt: str = "red") -> list[float]:
    """Redness of each frame while the controller fades from NEUTRAL to `prompt` (0.1 s per frame)."""
    eng = engine(pipe, NEUTRAL)
    store = ParamStore({"prompt": NEUTRAL, "transition": transition})
    now = [0.0]
    ref = pattern()
    out = [redness(eng.img2img(ref))]
    with Controller(eng, store, clock=lambda: now[0]) as ctl:
        store.set("prompt", prompt)
        assert ctl.wait_encoded()
        for k in range(frames):
            ctl.apply()
            out.append(redness(eng.img2img(ref)))
            now[0] += 0.1
    return out


def test_a_prompt_change_fades_in_over_the_transition(toy_pipe):
    smooth = fade(toy_pipe, 1.0)
    total = smooth[-1] - smooth[0]
    assert total > 10, f"redness by frame: {np.round(smooth, 1)}"
    steps = np.diff(smooth)
    assert steps.max() < 0.3 * total, f"a frame jumped {steps.max():.1f} of {total:.1f}: {np.round(smooth, 1)}"
    # the same change with no transition is one jump: the measure sees it
    cut = np.diff(fade(toy_pipe, 0.0, frames=3))
    assert cut.max() > 0.7 * total


def test_a_blend_lands_between_its_parts(toy_pipe):
    red, blue, both = (fade(toy_pipe, 0.0, frames=2, prompt=p)[-1] for p in ("red", "blue", "red | blue"))
    assert blue < both < red, f"redness: blue {blue:.1f}, red | blue {both:.1f}, red {red:.1f}"
