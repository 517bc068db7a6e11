"""Bypass and the engine show the same framed picture at the same place (real runner, controller
and image source; the trained toy model)."""

from __future__ import annotations

import cv2
import pytest

from dreamcam.backends.eager import EagerBackend
from dreamcam.control.controller import Controller
from dreamcam.frames import FIT_MODES
from dreamcam.knobs import ParamStore
from dreamcam.runtime.runner import Runner
from dreamcam.sources import ImageSource

from picture_checks import SIZE, assert_same_picture, best_shift, engine, pattern
from recording import RecordingSink


def last_frame(pipe, path, mode, bypass):
    eng = engine(pipe)
    store = ParamStore({"prompt": "a photo", "bypass": bypass})
    sink = RecordingSink(SIZE, SIZE)
    with sink, ImageSource(str(path), fps=60) as src, Controller(eng, store) as ctl:
        Runner(src, EagerBackend(eng), [sink], width=SIZE, height=SIZE, controller=ctl, frames=3, fit_mode=mode).run()
    return sink.frames[-1].image


@pytest.mark.parametrize("mode", FIT_MODES)
def test_bypass_and_engine_frames_line_up(toy_pipe, tmp_path, mode):
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), pattern(240, 136)[..., ::-1])
    through = last_frame(toy_pipe, path, mode, bypass=True)
    made = last_frame(toy_pipe, path, mode, bypass=False)
    assert_same_picture(made, through)
    dx, dy = best_shift(through, made, reach=12)
    # the toy VAE's strided convolutions move the picture a few pixels (measured: up to 6 at 128x128);
    # a wrong framing (another fit mode, a crop of the wrong part) moves it by tens of pixels
    assert abs(dx) <= 8 and abs(dy) <= 8, f"the engine's frame sits {dx},{dy} pixels off the bypass frame"
