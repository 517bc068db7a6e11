"""What a backend is (`Backend`), and the registry of backends by name.

A backend runs a prepared `StreamEngine`'s frame step: uint8 RGB frames in, uint8 RGB frames
out at the engine size. The runner (`dreamcam.runtime.runner`), the benchmarks and `dreamcam run`
use only the members of `Backend`.

A backend is registered with a `BackendSpec`: its name, how to build it, the device types it runs
on, where `--backend auto` tries it, and how to tell, without building it, whether it can run
here and why not. A spec names its code by import path ("package.module:attribute") where
importing that code would load torch or TensorRT: listing the backends (the CLI's `--backend`
check, `dreamcam devices`) then imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dreamcam.errors import ConfigError


@runtime_checkable
class Backend(Protocol):
    """The frame path of one engine. Two ways to run a frame:

    - `process(frame)`: one uint8 (H, W, 3) RGB frame at the engine size (or (F, H, W, 3) with
      frame_buffer_size F > 1) -> the same shape; returns when the frame is done.
    - `submit(frame, fit_mode)` then `collect()`: a captured frame of any size, framed to the
      engine size with `fit_mode` ("crop", "letterbox", "stretch"); at most two frames in flight;
      `collect` returns the oldest one's result. Where `overlaps` is True, `submit` returns before
      the frame is done, so the host work on the next frame overlaps the device's work on this one.

    `fence()` orders parameter changes (the engine's setters) after the frames submitted so far:
    they apply from the next frame. `close()` is idempotent; a backend is a context manager.
    """

    name: str  # as registered: "eager", "compiled", "tensorrt", ...

    @property
    def overlaps(self) -> bool: ...

    def process(self, frame: np.ndarray) -> np.ndarray: ...

    def submit(self, frame: np.ndarray, fit_mode: str = "crop") -> None: ...

    def collect(self) -> np.ndarray: ...

    def fence(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def _never() -> str | None:
    return None


def _always() -> bool:
    return True


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """A callable, or the attribute a "package.module:attribute" path names (imported now)."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class BackendSpec:
    """One registered backend.

    name: what `--backend` takes.
    factory: `factory(engine, **options) -> Backend`, or its "package.module:attribute" path.
    devices: the device types it runs on ("cuda", "cpu", ...); empty: any.
    auto_rank: where `--backend auto` tries it, lower first; None: auto never picks it.
    present: a cheap test (no import) that its software is installed at all; auto skips it
        where False, and tries it (falling back, with the reason, when it fails) where True.
    problem: why it cannot run here apart from the device (one line, what to install), or None;
        `dreamcam devices` reports it. A callable or its path.
    version: the version of what it runs on, for the report (e.g. TensorRT's), or None.
    """

    name: str
    factory: str | Callable[..., Backend]
    devices: tuple[str, ...] = ()
    auto_rank: int | None = None
    present: Callable[[], bool] = _always
    problem: str | Callable[[], str | None] = _never
    version: str | Callable[[], str | None] = _never

    def runs_on(self, device_type: str) -> bool:
        return not self.devices or device_type in self.devices

    def build(self, engine: Any, **options: Any) -> Backend:
        return resolve(self.factory)(engine, **options)

    def why_not(self) -> str | None:
        return resolve(self.problem)()

    def version_here(self) -> str | None:
        return resolve(self.version)()


_REGISTRY: dict[str, BackendSpec] = {}


def register(
    name: str,
    factory: str | Callable[..., Backend],
    *,
    devices: tuple[str, ...] = (),
    auto_rank: int | None = None,
    present: Callable[[], bool] = _always,
    problem: str | Callable[[], str | None] = _never,
    version: str | Callable[[], str | None] = _never,
) -> BackendSpec:
    """Add a backend under `name` (see `BackendSpec` for the arguments); returns its spec."""
    if not name or name == "auto" or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a backend name is a word other than 'auto' (letters, digits, - or _); got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"a backend named {name!r} is already registered: unregister it first")
    spec = BackendSpec(name, factory, tuple(devices), auto_rank, present, problem, version)
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a registered backend (no error where there is none)."""
    _REGISTRY.pop(name, None)


def registered() -> list[BackendSpec]:
    """Every registered backend, in the order of registration."""
    return list(_REGISTRY.values())


def backend_spec(name: str) -> BackendSpec:
    """The spec registered under `name` (ConfigError naming the choices where there is none)."""
    if name not in _REGISTRY:
        raise ConfigError(f"--backend must be one of {', '.join(['auto', *_REGISTRY])}; got {name!r}")
    return _REGISTRY[name]
