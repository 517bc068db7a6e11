"""The test-pattern source: a moving synthetic picture that needs no device."""

from __future__ import annotations

import numpy as np

from dreamcam.sources.base import Source


class TestPatternSource(Source):
    """A moving synthetic pattern: colour gradient, a bouncing disc and a sweeping bar."""

    kind = "testpattern"
    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 1280, height: int = 720, *, fps: float | None = 30.0, mirror: bool = False) -> None:
        super().__init__(fps=fps, mirror=mirror)
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.empty((height, width, 3), dtype=np.uint8)
        base[..., 0] = (x / max(1, width - 1) * 255).astype(np.uint8)
        base[..., 1] = (y / max(1, height - 1) * 255).astype(np.uint8)
        base[..., 2] = 128
        self._base = base
        self._r = r = max(4, min(width, height) // 8)
        dy, dx = np.mgrid[-r:r, -r:r]
        self._disc = dx * dx + dy * dy < r * r  # drawn by slicing, so a frame costs one copy

    def _grab(self) -> np.ndarray:
        return self.pattern(self._index)

    def pattern(self, i: int) -> np.ndarray:
        """Frame i of the pattern (deterministic)."""
        w, h = self.width, self.height
        img = self._base.copy()
        bar = (i * 8) % w
        img[:, bar : bar + max(2, w // 64)] = 255
        r = self._r
        cx = int(r + (w - 2 * r) * (0.5 + 0.5 * np.sin(i * 0.05)))
        cy = int(r + (h - 2 * r) * (0.5 + 0.5 * np.cos(i * 0.07)))
        y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r), max(0, cx - r), min(w, cx + r)
        disc = self._disc[y0 - (cy - r) : y1 - (cy - r), x0 - (cx - r) : x1 - (cx - r)]
        img[y0:y1, x0:x1][disc] = (250, 200, 40)
        return img
