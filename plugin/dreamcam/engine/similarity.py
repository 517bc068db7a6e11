"""The stochastic similarity filter: skip frames nearly identical to the last one processed."""

from __future__ import annotations

import random

import torch


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
        self._rng = random.Random(seed)

    def should_skip(self, x: torch.Tensor) -> bool:
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
