"""The toy model's output follows its input through the engine: position, orientation, colour
order, and how far it departs as strength grows (impossible to check with the random tiny model)."""

from __future__ import annotations

import numpy as np

from picture_checks import SIZE, assert_same_picture, corr, engine, pattern


def test_output_is_the_input_softened(toy_pipe):
    ref = pattern()
    out = engine(toy_pipe).img2img(ref)
    assert_same_picture(out, ref, min_corr=0.8)


def test_a_flipped_or_channel_swapped_input_gives_a_flipped_or_swapped_output(toy_pipe):
    eng = engine(toy_pipe)
    ref = pattern()
    for changed in (ref[:, ::-1], ref[::-1], ref[..., ::-1]):
        changed = np.ascontiguousarray(changed)
        assert_same_picture(eng.img2img(changed), changed, min_corr=0.8)


def test_more_strength_departs_further_from_the_input(toy_pipe):
    ref = pattern()
    diffs, corrs = [], []
    for strength in (0.0, 0.5, 1.0):
        out = engine(toy_pipe, strength=strength).img2img(ref).astype(np.float64)
        diffs.append(np.abs(out - ref).mean())
        corrs.append(corr(out, ref))
    assert diffs[0] < diffs[1] < diffs[2], f"mean abs difference by strength 0 / 0.5 / 1: {np.round(diffs, 1)}"
    assert corrs[0] > 0.85 and corrs[2] < corrs[0] - 0.2, f"correlation by strength 0 / 0.5 / 1: {np.round(corrs, 2)}"


def test_camera_noise_is_cleaned_up(toy_pipe):
    clean = pattern().astype(np.float64)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    out = engine(toy_pipe).img2img(noisy).astype(np.float64)

    def grain(img):  # what a 3x3 box blur takes away
        k = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        blur = sum(k[dy : dy + SIZE, dx : dx + SIZE] for dy in range(3) for dx in range(3)) / 9
        return np.abs(img - blur).mean()

    assert grain(out) < 0.5 * grain(noisy.astype(np.float64))
    assert corr(out, clean) > corr(noisy, clean) - 0.05
