"""One framing geometry (`frames.placement`) and one fit-mode check (`frames.check_fit_mode`) for every
framing: `frames.fit` (CPU), `engine.framing.fit_torch` (device) and the backends' `submit` here; the
sinks' `Framer` and `--sink ...?fit=` use the same two (their tests are with the sinks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends import make_backend
from dreamcam.engine.framing import fit_torch
from dreamcam.errors import ConfigError
from dreamcam.frames import FIT_MODES, Placement, check_fit_mode, fit, placement


@pytest.mark.parametrize(("w", "h", "mode", "want"), [
    (1280, 720, "crop", Placement((280, 0, 720, 720), (512, 512), (0, 0))),
    (1280, 720, "letterbox", Placement((0, 0, 1280, 720), (512, 288), (0, 112))),
    (1280, 720, "stretch", Placement((0, 0, 1280, 720), (512, 512), (0, 0))),
    (300, 600, "letterbox", Placement((0, 0, 300, 600), (256, 512), (128, 0))),
    (300, 600, "crop", Placement((0, 150, 300, 300), (512, 512), (0, 0))),
])
def test_placement_is_where_every_framing_puts_the_picture(w, h, mode, want):
    assert placement(w, h, 512, 512, mode) == want
    white = np.full((h, w, 3), 255, np.uint8)
    (x0, y0), (sw, sh) = want.offset, want.size
    picture = np.zeros((512, 512), bool)
    picture[y0 : y0 + sh, x0 : x0 + sw] = True
    outputs = {"fit": fit(white, 512, 512, mode),
               "fit_torch": fit_torch(torch.from_numpy(white), 512, 512, mode).numpy()}
    for what, out in outputs.items():
        assert (out[picture] == 255).all() and (out[~picture] == 0).all(), what


def test_the_fit_mode_check_is_one_message_everywhere(tiny_pipe):
    assert [check_fit_mode(m) for m in FIT_MODES] == list(FIT_MODES)
    message = "framing must be one of crop, letterbox, stretch; got 'zoom'"
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    engine.prepare("")
    frame = np.zeros((48, 80, 3), np.uint8)
    with make_backend("eager", engine) as backend:
        framings = [lambda: fit(frame, 64, 64, "zoom"), lambda: fit_torch(torch.from_numpy(frame), 64, 64, "zoom"),
                    lambda: placement(80, 48, 64, 64, "zoom"),
                    lambda: backend.submit(frame, "zoom")]
        for framing in framings:
            with pytest.raises(ConfigError, match=message):
                framing()
    with pytest.raises(ConfigError, match="^fit must be one of crop, letterbox, stretch; got 'zoom'$"):
        check_fit_mode("zoom", "fit")  # named as the user wrote the option (a sink's ?fit=)
