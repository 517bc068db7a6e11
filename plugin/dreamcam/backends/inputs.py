"""What every backend checks of the frames it is given, and how many it holds.

Shared by the eager backend and the graphed frame path (compiled, TensorRT), so a wrong frame
gets the same one-line error whichever backend runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError
from dreamcam.frames import check_fit_mode

DEPTH = 2  # frames a backend holds between submit and collect


def check_frame(engine: StreamEngine, frame: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) frame (or (F, H, W, 3) with frame_buffer_size F > 1) -> (F, H, W, 3)."""
    f, h, w = engine.frame_buffer_size, engine.height, engine.width
    want = (h, w, 3) if f == 1 else (f, h, w, 3)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != want:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ConfigError(f"expected a uint8 numpy frame of shape {want}, got {got}")
    return frame.reshape(f, h, w, 3)


def check_source_frame(engine: StreamEngine, frame: Any, fit_mode: str) -> np.ndarray:
    """A captured uint8 (h, w, 3) RGB frame of any size (or (F, h, w, 3) with frame_buffer_size
    F > 1) and a framing mode (crop, letterbox, stretch) -> the frame as (F, h, w, 3)."""
    check_fit_mode(fit_mode)
    f = engine.frame_buffer_size
    want = "(H, W, 3)" if f == 1 else f"({f}, H, W, 3)"
    ok = isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == (3 if f == 1 else 4)
    if not ok or frame.shape[-1] != 3 or (f > 1 and frame.shape[0] != f) or 0 in frame.shape:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ConfigError(f"expected a uint8 RGB numpy frame of shape {want}, got {got}")
    return frame.reshape(f, *frame.shape[-3:])


def check_room(pending: int) -> None:
    """RuntimeError where `pending` frames already fill the backend (DEPTH)."""
    if pending >= DEPTH:
        raise RuntimeError(f"{pending} frames are in flight, the most a backend holds: collect() one before "
                           "submitting another")
