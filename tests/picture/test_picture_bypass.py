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

from picture_checks import SIZE, assert_same_picture, disc_centre, engine, pattern
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
    (x0, y0), (x1, y1) = disc_centre(through), disc_centre(made)
    assert abs(x0 - x1) <= 4 and abs(y0 - y1) <= 4, f"disc at {x0:.1f},{y0:.1f} in bypass, {x1:.1f},{y1:.1f} from the engine"
