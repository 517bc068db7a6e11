"""Keeping the model libraries' chatter down where dreamcam says the same thing itself, once."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


def quiet_imports() -> None:
    """Call before importing transformers or diffusers."""
    # transformers warns about torchvision at import time; dreamcam never uses image processors.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def quiet_loggers(*loggers: str) -> Iterator[None]:
    """Silence these loggers for the block (their chatter is replaced by dreamcam's own message)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
