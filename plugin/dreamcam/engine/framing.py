"""Framing on the device: the geometry of `dreamcam.frames.fit`, done with torch.

On CUDA the captured frame is uploaded once as uint8 and resized, cropped or letterboxed and
converted to the engine's input there, instead of on the CPU with OpenCV. Sizes, offsets and
padding are exactly `fit`'s; pixel values differ only by interpolation round-off (bilinear
with antialias for a downscale here, OpenCV's area / bilinear there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dreamcam.frames import check_fit_mode, placement


def _check(image: torch.Tensor, width: int, height: int, mode: str) -> None:
    check_fit_mode(mode)
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"expected a uint8 (H, W, 3) RGB tensor, got {tuple(image.shape)} {image.dtype}")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")


def _resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """float (1, 3, h, w) -> (1, 3, height, width); antialiased when it shrinks (like INTER_AREA)."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    shrink = width * height < w * h
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def _fit_nchw(image: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, height, width) in 0..255, framed like `fit` (same `placement`)."""
    h, w = image.shape[:2]
    x = image.permute(2, 0, 1).unsqueeze(0).float()
    if (h, w) == (height, width):
        return x
    p = placement(w, h, width, height, mode)
    sx, sy, cw, ch = p.source
    scaled = _resize(x[:, :, sy : sy + ch, sx : sx + cw], *p.size)
    (x0, y0), (sw, sh) = p.offset, p.size
    if (sw, sh) == (width, height):
        return scaled
    return F.pad(scaled, (x0, width - sw - x0, y0, height - sh - y0), value=0.0)


def fit_torch(image: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """Frame a uint8 (H, W, 3) RGB tensor to uint8 (height, width, 3) on the tensor's device.

    Same geometry as `dreamcam.frames.fit`: crop scales to cover and cuts the centre,
    letterbox scales to fit and pads with black, stretch scales each axis.
    """
    _check(image, width, height, mode)
    if tuple(image.shape[:2]) == (height, width):
        return image
    out = _fit_nchw(image, width, height, mode)
    return out.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()


def fit_to_engine(
    image: torch.Tensor, width: int, height: int, mode: str = "crop", *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Frame a uint8 (H, W, 3) RGB tensor straight to the engine's input.

    Returns `dtype` (1, 3, height, width) in [-1, 1] on the tensor's device (the range
    `StreamEngine.process` takes), with no uint8 round trip between resize and conversion.
    """
    _check(image, width, height, mode)
    out = _fit_nchw(image, width, height, mode)
    return (out / 127.5 - 1.0).clamp_(-1.0, 1.0).to(dtype).contiguous()
