"""ControlNet preprocessors (engine/preprocessors.py) on a frame with one bright box: edges where
the box's outline is and nowhere else, depth in 0..1 at the frame size, the input as is."""

from __future__ import annotations

import pytest
import torch
from dreamcam.engine.control_spec import check_control_flags
from dreamcam.engine.preprocessors import Canny, Depth, InputImage, SoftEdge, make_preprocessor, tiny_depth_model
from dreamcam.errors import ConfigError

H, W = 64, 96


@pytest.fixture()
def box():
    x = -torch.ones(2, 3, H, W)
    x[:, :, 16:48, 30:70] = 0.8
    return x


def _outline(img):
    inside, flat = img[..., 24:40, 38:62], img[..., :8, :8]
    ring = img[..., 14:18, 30:70]
    return inside, flat, ring


def test_canny_marks_the_outline_only(box):
    out = Canny()(box)
    assert out.shape == (2, 3, H, W) and set(out.unique().tolist()) == {0.0, 1.0}
    inside, flat, ring = _outline(out)
    assert inside.max() == 0 and flat.max() == 0 and ring.max() == 1


def test_softedge_is_soft_and_strong_on_the_outline(box):
    out = SoftEdge()(box)
    assert out.shape == (2, 3, H, W) and 0 <= out.min() and out.max() <= 1
    inside, flat, ring = _outline(out)
    assert flat.max() == 0 and ring.max() > 0.5 and inside.max() < ring.max()
    assert len(out.unique()) > 10  # grey levels, not a binary map


def test_input_is_the_frame_in_0_1(box):
    assert torch.equal(InputImage()(box), (box + 1) / 2)


def test_depth_runs_at_the_frame_size_in_0_1(box):
    out = Depth(tiny_depth_model())(box)
    assert out.shape == (2, 3, H, W) and out.min() == 0 and out.max() == pytest.approx(1.0)


def test_names_are_checked():
    assert isinstance(make_preprocessor("canny"), Canny)
    assert isinstance(make_preprocessor("depth:tiny"), Depth)
    for bad in ("sketch", "canny:x", ""):
        with pytest.raises(ConfigError, match="--control takes"):
            make_preprocessor(bad)
    assert check_control_flags(["a", "b"], ["depth:tiny"]) == ["depth:tiny", "canny"]
