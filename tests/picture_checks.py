"""Measures of one picture against another, for the end-to-end picture tests (tests/picture/),
which run the trained toy model (`load_pipeline("toy")`): its output is a softened copy of its
input, so orientation, position and colour order can be checked through the whole path."""

from __future__ import annotations

import numpy as np

from dreamcam import StreamEngine, strength_to_t_index_list
from dreamcam.sources import TestPatternSource

SIZE = 128  # engine size of the picture tests: small enough to run fast on a CPU


def pattern(width: int = SIZE, height: int = SIZE, index: int = 40) -> np.ndarray:
    """Frame `index` of dreamcam's test pattern: red rises left to right, green top to bottom,
    blue is flat; a yellow disc and a white bar (no symmetry, so a flip or swap shows)."""
    return TestPatternSource(width, height, fps=None).pattern(index)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two pictures' values (all pixels, all channels)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def mean_rgb(img: np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float64).reshape(-1, 3).mean(axis=0)


def saturation(img: np.ndarray) -> float:
    """Mean spread between the strongest and weakest channel of each pixel (0 = gray)."""
    a = np.asarray(img, np.float64)
    return float((a.max(axis=-1) - a.min(axis=-1)).mean())


def disc_centre(img: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the yellow of the test pattern's disc: red and green high, blue low."""
    a = np.asarray(img, np.float64)
    yellow = np.clip((a[..., 0] + a[..., 1]) / 2 - a[..., 2] - 60, 0, None)
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    total = yellow.sum()
    assert total > 0, "no yellow disc in the picture"
    return float((xs * yellow).sum() / total), float((ys * yellow).sum() / total)


def assert_same_picture(out: np.ndarray, ref: np.ndarray, *, min_corr: float = 0.75) -> None:
    """`out` shows `ref`: correlated, the right way up and round, colours in the right channels."""
    assert out.shape == ref.shape, f"{out.shape} != {ref.shape}"
    c = corr(out, ref)
    assert c >= min_corr, f"output correlates {c:.2f} with its input (want >= {min_corr})"
    for name, flipped in (("left-right", ref[:, ::-1]), ("upside-down", ref[::-1])):
        cf = corr(out, flipped)
        assert c > cf + 0.1, f"output looks {name} flipped: corr {c:.2f} with the input, {cf:.2f} flipped"
    varying = [ch for ch in range(3) if ref[..., ch].std() > 10]
    for ch in varying:
        own = corr(out[..., ch], ref[..., ch])
        for other in varying:
            if other != ch:
                cross = corr(out[..., ch], ref[..., other])
                assert own > cross, f"output channel {ch} follows input channel {other} ({cross:.2f} > {own:.2f}): colour order"
    shift = np.abs(mean_rgb(out) - mean_rgb(ref))
    assert shift.max() < 40, f"mean colour moved by {shift.round(1)} (RGB): colour order or range"


def engine(pipe, prompt: str = "a photo", strength: float = 0.5, size: int = SIZE, **kw) -> StreamEngine:
    """A prepared one-step engine at size x size (residual CFG "self", as `dreamcam run`)."""
    eng = StreamEngine(pipe, strength_to_t_index_list(strength, 1), size, size, cfg_type=kw.pop("cfg_type", "self"), **kw)
    eng.prepare(prompt)
    return eng
