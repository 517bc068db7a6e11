"""The eager backend: the engine's PyTorch frame step as written, one frame at a time.

It offers the same two-deep `submit` / `collect` API as the graphed backends, but computes in
`submit` (CPU framing with `frames.fit`, then `engine.img2img`), so nothing overlaps:
`overlaps` is False and the runner does not hold a second frame back for it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from dreamcam.backends.inputs import check_room, check_source_frame
from dreamcam.engine.stream import StreamEngine
from dreamcam.frames import fit


class EagerBackend:
    name = "eager"
    overlaps = False  # submit computes the frame before it returns

    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine
        self._done: deque[np.ndarray] = deque()

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size -> uint8 (H, W, 3) RGB."""
        return self.engine.img2img(frame)

    @property
    def pending(self) -> int:
        """Frames submitted and not yet collected (0..2)."""
        return len(self._done)

    def submit(self, frame: np.ndarray, fit_mode: str = "crop") -> None:
        """A captured uint8 (h, w, 3) RGB frame of any size (or (F, h, w, 3)), framed to the
        engine size with `fit_mode` (crop, letterbox, stretch) and run at once."""
        e = self.engine
        frames = check_source_frame(e, frame, fit_mode)
        check_room(self.pending)
        framed = [fit(f, e.width, e.height, fit_mode) for f in frames]
        self._done.append(e.img2img(framed[0] if len(framed) == 1 else np.stack(framed)))

    def collect(self) -> np.ndarray:
        """The oldest submitted frame's result, uint8 (H, W, 3) (or (F, H, W, 3))."""
        if not self._done:
            raise RuntimeError("no frame in flight: submit(frame) before collect()")
        return self._done.popleft()

    def fence(self) -> None:
        """Nothing runs after submit returns, so a setter can never reach a running frame."""

    def close(self) -> None:
        self._done.clear()

    def __enter__(self) -> EagerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
