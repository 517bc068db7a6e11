"""Backends run the engine's frame step: uint8 RGB frames in, uint8 RGB frames out.

The contract is `Backend` (backends/base.py): `name`, `overlaps`, `process(frame)`,
`submit(frame, fit_mode)` / `collect()`, `fence()`, `close()`, and a context manager.
`make_backend(name, engine, **options)` builds one around a prepared engine.

Live parameter changes go through the engine's setters (set_prompt, set_strength, ...), which
update the engine's tensors in place, so every backend sees them at the next frame (the
compiled backend's CUDA graph reads those same tensors).

Backends are registered by name (`register`); `--backend`, `--backend auto` and `dreamcam
devices` read the registry. The built-in ones:

- "eager": any device; the engine's PyTorch code as written. The choice on a CPU.
- "compiled": CUDA; torch.compile'd UNet and tiny VAE, the whole frame step captured in one
  CUDA graph (fp16, channels-last). First start compiles (about a minute for sd-turbo on an
  H100/H200), later starts reuse the cache under `engines_dir()`.
- "tensorrt": CUDA with the `tensorrt` package (10 or 11); ONNX export and engine build on first
  use, cached under `engines_dir()`.
- "auto": the registered backends that run on the device, lowest `auto_rank` first: on CUDA
  tensorrt (where the package is installed), then compiled, then eager; on a CPU eager. Where the
  one it picks cannot run (an unsupported TensorRT, no Triton, a model the fast path cannot take)
  it says why and tries the next.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from dreamcam.backends.base import Backend, BackendSpec, backend_spec, register, registered, unregister
from dreamcam.backends.cache import engines_dir
from dreamcam.backends.compiled.triton import triton_problem
from dreamcam.errors import ConfigError, DeviceError, DreamcamError

__all__ = [
    "BACKENDS", "Backend", "BackendSpec", "auto_candidates", "backend_names", "backend_spec", "check_backend_device",
    "choose_backend", "engines_dir", "make_backend", "register", "registered", "triton_problem", "unregister",
]

log = logging.getLogger(__name__)

DEVICE_NAMES = {"cuda": "CUDA", "cpu": "CPU", "mps": "MPS"}


def _tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


register("eager", "dreamcam.backends.eager:EagerBackend", auto_rank=30)
register("compiled", "dreamcam.backends.compiled.backend:CompiledBackend", devices=("cuda",), auto_rank=20,
         problem=triton_problem)
register("tensorrt", "dreamcam.backends.tensorrt.backend:TensorRTBackend", devices=("cuda",), auto_rank=10,
         present=_tensorrt_installed, problem="dreamcam.backends.tensorrt.backend:tensorrt_problem",
         version="dreamcam.backends.tensorrt.backend:tensorrt_version")

BACKENDS = ("auto", *(spec.name for spec in registered()))  # the built-in names; backend_names() is live


def backend_names() -> tuple[str, ...]:
    """What `--backend` takes now: "auto" and every registered backend."""
    return ("auto", *(spec.name for spec in registered()))


def auto_candidates(device_type: str) -> list[str]:
    """What "auto" tries on a device type, in order: the registered backends that run on it and
    are installed, lowest `auto_rank` first (on CUDA: tensorrt where importable, compiled, eager;
    on anything else eager)."""
    specs = [s for s in registered() if s.auto_rank is not None and s.runs_on(device_type) and s.present()]
    return [s.name for s in sorted(specs, key=lambda s: s.auto_rank)]


def _needs_device(spec: BackendSpec) -> str:
    """The devices a backend runs on, as words: "a CUDA device"."""
    return "a " + " or ".join(DEVICE_NAMES.get(d, d) for d in spec.devices) + " device"


def check_backend_device(chosen: str, device_type: str, what: str = "run") -> None:
    """A backend on a device it does not run on, said in one line before anything slow (model
    load, benchmark)."""
    spec = backend_spec(chosen)
    if not spec.runs_on(device_type):
        raise DeviceError(f"the {chosen} backend needs {_needs_device(spec)}; this {what} is on {device_type}: "
                          f"use --backend eager (or auto) on a {DEVICE_NAMES.get(device_type, device_type)}")


def choose_backend(name: str, device_type: str) -> str:
    """Resolve "auto" for a device type ("cuda" or "cpu") to its first candidate; other names pass
    through (ConfigError for a name nobody registered)."""
    if name != "auto":
        return backend_spec(name).name
    candidates = auto_candidates(device_type)
    if not candidates:
        raise ConfigError(f"no registered backend runs on {device_type}: pass --device cpu")
    return candidates[0]


def _build(name: str, engine: Any, options: dict[str, Any]) -> Backend:
    return backend_spec(name).build(engine, **options)


def make_backend(name: str, engine: Any, **options: Any) -> Backend:
    """Build the named backend around a prepared engine (options go to its constructor; with
    "auto", to the first candidate only: they are the options for the backend it picks)."""
    chosen = choose_backend(name, engine.device.type)
    if name != "auto":
        return _build(chosen, engine, options)
    log.info("backend auto -> %s (device %s)", chosen, engine.device)
    candidates = auto_candidates(engine.device.type)
    for candidate, fallback in zip(candidates, candidates[1:]):
        try:
            return _build(candidate, engine, options)
        except DreamcamError as e:
            # auto promised a working camera: what the faster path cannot take still runs, slower
            log.warning("backend %s cannot run this set-up (%s); using %s", candidate, e, fallback)
        options = {}  # they were the first candidate's
    return _build(candidates[-1], engine, options)
