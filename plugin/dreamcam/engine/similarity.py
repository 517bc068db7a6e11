"""The stochastic similarity filter: skip frames nearly identical to the last one processed.

One filter serves both places that skip: `StreamEngine.process` (float model input) and the
live loop (`Runner`, uint8 frames of the engine size, compared through `image_key`). Either asks
`repeat(x)` for the output to show again, and gives each output it computed to `keep`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def image_key(image: np.ndarray) -> torch.Tensor:
    """A uint8 (H, W, 3) RGB frame as the filter compares it: every 4th pixel each way, float in
    [-1, 1] on the CPU (the same similarity as the whole frame, 16x cheaper to measure)."""
    return torch.from_numpy(np.ascontiguousarray(image[::4, ::4])).float().div_(127.5).sub_(1.0)


class SimilarityFilter:
    """Stochastic similar-frame skip: the closer a frame is to the last one processed, the
    likelier it is skipped; never more than `max_skip_frame` skips in a row.

    The skip probability is max(0, 1 - (1 - cos_sim) / (1 - threshold)), cos_sim being the
    cosine similarity of the two input images.
    """

    def __init__(self, threshold: float = 0.98, max_skip_frame: int = 10, *, seed: int = 0) -> None:
        self.threshold = float(threshold)
        self.max_skip_frame = int(max_skip_frame)
        self.skip_count = 0
        self.skipped_total = 0
        self._prev: torch.Tensor | None = None
        self._kept: Any = None
        self._rng = random.Random(seed)

    def should_skip(self, x: torch.Tensor) -> bool:
        """Whether frame `x` may skip the model (the decision alone; `repeat` also needs an output)."""
        if self._prev is None or self._prev.shape != x.shape:
            self._prev = x.detach().clone()
            return False
        cos = torch.nn.functional.cosine_similarity(self._prev.reshape(-1), x.reshape(-1), dim=0, eps=1e-6).item()
        p_skip = 0.0 if self.threshold >= 1 else max(0.0, 1 - (1 - cos) / (1 - self.threshold))
        if p_skip < self._rng.uniform(0, 1) or self.skip_count > self.max_skip_frame:
            self.skip_count = 0
            self._prev.copy_(x)
            return False
        self.skip_count += 1
        self.skipped_total += 1
        return True

    def repeat(self, x: torch.Tensor) -> Any:
        """The kept output to show again for frame `x`, or None: run the model on `x`, then `keep`
        its output."""
        return self._kept if self.should_skip(x) and self._kept is not None else None

    def keep(self, output: Any) -> None:
        """The output of the last frame the model ran (what `repeat` gives back); None forgets it."""
        self._kept = output
