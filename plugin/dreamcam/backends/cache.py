"""Where compiled artefacts and TensorRT engines are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path


def engines_dir() -> Path:
    """Where compiled artefacts and TensorRT engines are cached: $DREAMCAM_ENGINES_DIR, else the
    checkout's `engines/` folder, else ~/.cache/dreamcam/engines (created on first use)."""
    env = os.environ.get("DREAMCAM_ENGINES_DIR")
    if env:
        path = Path(env)
    else:
        checkout = Path(__file__).resolve().parents[3] / "engines"
        path = checkout if checkout.is_dir() else Path.home() / ".cache" / "dreamcam" / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path
