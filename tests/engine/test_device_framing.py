"""`fit_torch` / `fit_to_engine` frame exactly like `frames.fit` (same size, offsets and bars);
pixels agree to interpolation round-off. Run on CPU tensors here, on CUDA where there is one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam.errors import ConfigError
from dreamcam.frames import FIT_MODES, fit
from dreamcam.engine.framing import fit_to_engine, fit_torch

SIZES = [(640, 480), (1280, 720), (480, 640), (101, 77)]  # input (w, h): landscape, 16:9, portrait, odd
TARGETS = [(512, 512), (64, 48), (300, 200), (1280, 720)]  # engine (w, h): down and up


def picture(w: int, h: int) -> np.ndarray:
    """Smooth gradients plus a hard-edged block: both kinds of content a camera sees."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, 128 + 100 * np.sin(x / 17) * np.cos(y / 23)], -1)
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 250, 250)
    return img.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("src", SIZES)
@pytest.mark.parametrize("dst", TARGETS)
def test_fit_torch_matches_fit(src, dst, mode):
    img = picture(*src)
    want = fit(img, *dst, mode)
    got = fit_torch(torch.from_numpy(img), *dst, mode)
    assert got.dtype == torch.uint8 and tuple(got.shape) == want.shape
    got = got.numpy()
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    # interpolation round-off: bilinear+antialias vs OpenCV's area filter differ most at hard
    # edges and fine texture under a 10-20x shrink; the placement is checked exactly below
    assert diff.mean() < 2.0, diff.mean()
    assert np.percentile(diff, 99) <= 24, np.percentile(diff, 99)
    if mode == "letterbox":  # the bars: black in the same rows and columns, exactly
        np.testing.assert_array_equal(got.max(axis=(1, 2)) == 0, want.max(axis=(1, 2)) == 0)
        np.testing.assert_array_equal(got.max(axis=(0, 2)) == 0, want.max(axis=(0, 2)) == 0)


def _centroid_and_area(img: np.ndarray) -> tuple[float, float, float]:
    w = img[..., 0].astype(np.float64)
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return float((x * w).sum() / w.sum()), float((y * w).sum() / w.sum()), float(w.sum() / 255)


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("src", SIZES)
@pytest.mark.parametrize("dst", TARGETS)
def test_fit_torch_same_geometry(src, dst, mode):
    """A white block on black lands at the same place, the same size, to a fraction of a pixel."""
    w, h = src
    img = np.zeros((h, w, 3), np.uint8)
    img[h // 3 : h // 2 + 1, w // 5 : w // 2] = 255
    cx, cy, area = _centroid_and_area(fit(img, *dst, mode))
    gx, gy, garea = _centroid_and_area(fit_torch(torch.from_numpy(img), *dst, mode).numpy())
    assert abs(cx - gx) < 0.25 and abs(cy - gy) < 0.25, ((cx, cy), (gx, gy))
    assert abs(area - garea) <= 0.04 * area + 1, (area, garea)  # the filters weigh edges a little differently


def test_half_pixel_shift_would_be_caught():
    """The placement tolerance above sees a crop window off by half an output pixel."""
    img = np.zeros((480, 640, 3), np.uint8)
    img[160:241, 128:320] = 255
    cx, _, _ = _centroid_and_area(fit(img, 300, 200, "crop"))
    gx, _, _ = _centroid_and_area(fit_torch(torch.from_numpy(np.roll(img, 1, axis=1)), 300, 200, "crop").numpy())
    assert abs(cx - gx) >= 0.25


def test_same_size_is_untouched():
    t = torch.from_numpy(picture(64, 48))
    assert fit_torch(t, 64, 48, "letterbox") is t


@pytest.mark.parametrize("mode", FIT_MODES)
def test_fit_to_engine_is_the_engine_input(mode):
    img = torch.from_numpy(picture(640, 360))
    x = fit_to_engine(img, 64, 64, mode, dtype=torch.float32)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    u8 = fit_torch(img, 64, 64, mode).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    assert (x - u8).abs().max() <= 1 / 127.5 + 1e-6  # only the uint8 rounding apart
    if mode == "letterbox":
        assert torch.all(x[..., :5, :] == -1)  # black bars are -1 in the engine's range


def test_bad_inputs():
    img = torch.zeros((8, 8, 3), dtype=torch.uint8)
    with pytest.raises(ConfigError, match="framing must be one of"):
        fit_torch(img, 4, 4, "zoom")
    with pytest.raises(TypeError, match=r"uint8 \(H, W, 3\)"):
        fit_torch(img.float(), 4, 4)
    with pytest.raises(TypeError, match=r"got \(8, 8\)"):
        fit_torch(img[..., 0], 4, 4)
    with pytest.raises(ValueError, match="positive"):
        fit_to_engine(img, 0, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", FIT_MODES)
def test_cuda_matches_cpu(mode):
    img = torch.from_numpy(picture(1280, 720))
    cpu = fit_torch(img, 512, 512, mode)
    gpu = fit_torch(img.cuda(), 512, 512, mode)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
    half = fit_to_engine(img.cuda(), 512, 512, mode, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.is_cuda
