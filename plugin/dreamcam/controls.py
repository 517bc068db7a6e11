"""Applies the live parameters to the engine, on the engine thread, between frames."""

from __future__ import annotations

import logging
from typing import Any

from dreamcam.params import ParamStore

log = logging.getLogger(__name__)


class Controller:
    """Takes the latest changes from the store and hands them to the engine's setters.

    Call `apply()` from the engine thread between frames; nothing else touches the engine.
    """

    def __init__(self, engine: Any, store: ParamStore) -> None:
        self.engine = engine
        self.store = store
        self.bypass = bool(store.get("bypass"))

    def apply(self) -> None:
        changes = self.store.take_changes()
        if not changes:
            return
        e = self.engine
        setters = {
            "prompt": e.set_prompt,
            "negative_prompt": e.set_negative_prompt,
            "strength": e.set_strength,
            "guidance": e.set_guidance,
            "delta": e.set_delta,
            "seed": e.set_seed,
        }
        for name, value in changes.items():
            if name in setters:
                setters[name](value)
            elif name == "bypass":
                self.bypass = bool(value)

    def close(self) -> None:
        pass
