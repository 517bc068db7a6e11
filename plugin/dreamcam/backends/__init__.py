"""Backends run the engine's frame step: uint8 RGB frame in, uint8 RGB frame out.

`make_backend(name, engine)` returns an object with:

- `name`: the backend actually chosen ("eager", "compiled", "tensorrt");
- `process(frame)`: uint8 numpy (H, W, 3) RGB at the engine size -> uint8 numpy (H, W, 3);
- `close()`: idempotent; also a context manager.

Live parameter changes go through the engine's setters (set_prompt, set_strength, ...), which
update the engine's tensors in place, so every backend sees them at the next frame (the
compiled backend's CUDA graph reads those same tensors).

Which backend where:

- "eager": any device; the engine's PyTorch code as written. The choice on a CPU.
- "compiled": CUDA; torch.compile'd UNet and tiny VAE, the whole frame step captured in one
  CUDA graph (fp16, channels-last). First start compiles (about a minute for sd-turbo on an
  H100/H200), later starts reuse the cache under `engines/`.
- "tensorrt": CUDA with the `tensorrt` package (10 or 11); ONNX export and engine build on first
  use, cached under `engines/`.
- "auto": tensorrt where importable on CUDA, else compiled on CUDA, else eager; where the one it
  picks cannot run (an unsupported TensorRT, no Triton, a model the fast path cannot take) it
  says why and tries the next: tensorrt, then compiled, then eager.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from dreamcam.errors import ConfigError, DeviceError, DreamcamError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "compiled", "tensorrt")


def auto_candidates(device_type: str) -> list[str]:
    """What "auto" tries on a device type, in order: on CUDA tensorrt (where the package is
    importable), compiled, then eager; on anything else eager."""
    if device_type != "cuda":
        return ["eager"]
    return (["tensorrt"] if importlib.util.find_spec("tensorrt") is not None else []) + ["compiled", "eager"]


def check_backend_device(chosen: str, device_type: str, what: str = "run") -> None:
    """A GPU backend on a CPU said in one line, before anything slow (model load, benchmark)."""
    if chosen in ("compiled", "tensorrt") and device_type != "cuda":
        raise DeviceError(f"the {chosen} backend needs a CUDA device; this {what} is on {device_type}: "
                          "use --backend eager (or auto) on a CPU")


def triton_problem() -> str | None:
    """Why torch.compile cannot make CUDA kernels here, or None: PyTorch's Windows wheels come
    without Triton (pytorch/pytorch#136361), and Inductor writes its CUDA kernels in Triton."""
    if importlib.util.find_spec("triton") is not None:
        return None
    return "torch.compile needs Triton and this torch has none (the usual case on Windows): pip install triton-windows"


def choose_backend(name: str, device_type: str) -> str:
    """Resolve "auto" for a device type ("cuda" or "cpu") to its first candidate; other names pass through."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return auto_candidates(device_type)[0] if name == "auto" else name


def _build(name: str, engine: Any, options: dict[str, Any]):
    if name == "eager":
        from dreamcam.backends.eager import EagerBackend

        return EagerBackend(engine)
    if name == "compiled":
        from dreamcam.backends.compiled.backend import CompiledBackend

        return CompiledBackend(engine, **options)
    from dreamcam.backends.tensorrt.backend import TensorRTBackend

    return TensorRTBackend(engine, **options)


def make_backend(name: str, engine: Any, **options: Any):
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


def engines_dir() -> Path:
    """Where compiled artefacts and TensorRT engines are cached: $DREAMCAM_ENGINES_DIR, else the
    checkout's `engines/` folder, else ~/.cache/dreamcam/engines (created on first use)."""
    import os

    env = os.environ.get("DREAMCAM_ENGINES_DIR")
    if env:
        path = Path(env)
    else:
        checkout = Path(__file__).resolve().parents[3] / "engines"
        path = checkout if checkout.is_dir() else Path.home() / ".cache" / "dreamcam" / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path
