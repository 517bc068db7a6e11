"""Frames that carry their own number, readable back from a decoded (even rescaled) picture: for
checking the order and gaps of a video stream after it went through an encoder and a player."""

from __future__ import annotations

import numpy as np

BITS, W, H = 16, 128, 64


def coded(i: int) -> np.ndarray:
    """A frame that carries the number i (16 bits) as black/white 8-pixel columns."""
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * 8 : (b + 1) * 8] = 255
    return img


def code_of(img: np.ndarray) -> int:
    """The number `coded` put into a (decoded, possibly rescaled) picture."""
    gray = img.mean(axis=2)
    h, w = gray.shape
    cols = [gray[h // 4 : 3 * h // 4, int((b + 0.3) * w / BITS) : int((b + 0.7) * w / BITS)].mean() for b in range(BITS)]
    return sum(1 << b for b, v in enumerate(cols) if v > 128)
