"""The eager backend: the engine's PyTorch frame step as written, one frame at a time."""

from __future__ import annotations

from typing import Any

import numpy as np


class EagerBackend:
    name = "eager"

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size -> uint8 (H, W, 3) RGB."""
        return self.engine.img2img(frame)

    def close(self) -> None:
        pass

    def __enter__(self) -> EagerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
