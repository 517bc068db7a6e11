"""Backends run the engine's frame step: uint8 RGB frame in, uint8 RGB frame out.

`make_backend(name, engine)` returns an object with:

- `name`: the backend actually chosen ("eager", "compiled", "tensorrt");
- `process(frame)`: uint8 numpy (H, W, 3) RGB at the engine size -> uint8 numpy (H, W, 3);
- `close()`: idempotent; also a context manager.

Live parameter changes go through the engine's setters (set_prompt, set_strength, ...), which
update the engine's tensors in place, so every backend sees them at the next frame.
"""

from __future__ import annotations

from typing import Any

from dreamcam.errors import ConfigError

BACKENDS = ("auto", "eager", "compiled", "tensorrt")


def make_backend(name: str, engine: Any):
    if name not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name in ("auto", "eager"):
        from dreamcam.backends.eager import EagerBackend

        return EagerBackend(engine)
    raise ConfigError(f"backend {name!r} is not available in this build")
