"""dreamcam: a live AI-restyled camera for OBS, Zoom, Discord and browsers.

The public names are imported on first use, so `dreamcam devices` and the OSC and capture
modules start without loading torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "StreamEngine": "dreamcam.engine.stream",
    "strength_to_t_index_list": "dreamcam.engine.schedule",
    "tiny_pipeline": "dreamcam.models.pipelines",
    "toy_pipeline": "dreamcam.models.loading",
    "load_pipeline": "dreamcam.models.loading",
    "ConfigError": "dreamcam.errors",
    "DreamcamError": "dreamcam.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dreamcam' has no attribute {name!r}")
