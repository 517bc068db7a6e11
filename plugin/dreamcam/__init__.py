"""dreamcam: a live AI-restyled camera for OBS, Zoom, Discord and browsers."""

from dreamcam.engine import StreamEngine, strength_to_t_index_list
from dreamcam.errors import ConfigError, DreamcamError
from dreamcam.models import load_pipeline, tiny_pipeline

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DreamcamError",
    "StreamEngine",
    "__version__",
    "load_pipeline",
    "strength_to_t_index_list",
    "tiny_pipeline",
]
