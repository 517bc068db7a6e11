"""The timing core every benchmark uses: per-call wall times and their summary, the input frames,
and the engine a benchmark runs (flags checked, pipeline built, engine prepared, backend options).

Figures: fps = frames / wall seconds of the timed run (with --frame-buffer F each call takes and
returns F frames, so fps counts F per call); p50/p99 = percentiles of per-call wall milliseconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dreamcam.backends import check_backend_device, choose_backend
from dreamcam.backends.options import check_knobs, knob_options
from dreamcam.engine.schedule import check_t_index_list, strength_to_t_index_list
from dreamcam.engine.controlnet import build_control_stack
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError
from dreamcam.models.archs import arch_pipeline
from dreamcam.models.paths import TINY_MODELS
from dreamcam.models.pipelines import tiny_pipeline


def summarize(ms: list[float], wall_s: float, frames_per_call: int = 1) -> dict[str, float]:
    """Per-call wall milliseconds and the run's wall seconds -> frames, fps (frames per second,
    frames_per_call frames per call), p50/p99/mean ms per call."""
    a = np.asarray(ms, dtype=np.float64)
    n = int(a.size) * frames_per_call
    return {
        "frames": n,
        "frames_per_call": frames_per_call,
        "fps": round(n / wall_s, 2) if wall_s > 0 else float("nan"),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def time_frames(step: Callable[[int], Any], frames: int, warmup: int, frames_per_call: int = 1) -> dict[str, float]:
    """Call step(i) `warmup` times untimed, then frames // frames_per_call times timed (at least
    once; each call is host -> host and handles frames_per_call frames)."""
    for i in range(warmup):
        step(i)
    ms = []
    t_run = time.perf_counter()
    for i in range(max(1, frames // frames_per_call)):
        t0 = time.perf_counter()
        step(i)
        ms.append((time.perf_counter() - t0) * 1e3)
    return summarize(ms, time.perf_counter() - t_run, frames_per_call)


def batched(frames: list[np.ndarray], f: int) -> list[np.ndarray]:
    """Frames as process() takes them: each (H, W, 3) when f == 1, else stacks (f, H, W, 3) of
    consecutive frames (as many stacks as frames, cycling)."""
    if f == 1:
        return frames
    return [np.stack([frames[(i + k) % len(frames)] for k in range(f)]) for i in range(0, f * len(frames), f)]


def input_frames(width: int, height: int, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """n distinct uint8 (H, W, 3) frames: smooth gradients plus noise, like a camera."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for k in range(n):
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200 + 20 * k
        out.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    return out


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags and settle device, dtype, architecture and t_index_list."""
    arch = args.arch or args.model or "tiny"
    if args.model and args.arch and args.arch != args.model:
        raise ConfigError(f"--model {args.model} and --arch {args.arch} disagree; pass one of them")
    if not (args.arch is None or args.arch in TINY_MODELS) and not args.random_weights:
        raise ConfigError(f"--arch {arch} needs --random-weights: no pretrained weights are downloaded for benchmarks")
    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")
    if args.frame_buffer < 1:
        raise ConfigError(f"--frame-buffer must be >= 1 (frames per UNet call), got {args.frame_buffer}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    chosen = choose_backend(args.backend, device)
    check_backend_device(chosen, device, "benchmark")  # said before the slow build and the peer's frames
    check_knobs(args, chosen)
    if args.t_index_list:
        t_index = check_t_index_list(args.t_index_list.split(","), 50)
    else:
        t_index = strength_to_t_index_list(args.strength, args.steps, 50)
    # a real model (hub id, folder, file) loads as `dreamcam run` loads it; tiny and --arch are built here
    model = None if args.arch or arch in TINY_MODELS else arch
    return {"arch": arch, "model": model, "backend": chosen, "device": device, "dtype": dtype, "t_index_list": t_index}


def build_pipeline(arch: str, device: str, dtype: torch.dtype, seed: int = 0):
    """The random-weight pipeline `--arch` names (tiny: the offline tiny pipeline)."""
    if arch in TINY_MODELS:
        return tiny_pipeline(seed, device=device, dtype=dtype, arch=TINY_MODELS[arch])
    return arch_pipeline(arch, seed=seed, device=device, dtype=dtype)


def cuda_sync(device: str) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def mem_reset(device: str) -> None:
    """Start a new peak-memory count (CUDA only)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def mem_peak_mib(device: str) -> float | None:
    """Peak CUDA memory torch allocated since `mem_reset`, in MiB; None on the CPU."""
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def backend_options(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    """The compiled backend's constructor options from the flags; {} for other backends."""
    if choose_backend(args.backend, engine.device.type) != "compiled":
        return {}
    return {"compile": not args.no_compile, "cuda_graph": not args.no_cuda_graph, **knob_options(args)}


def make_engine(pipe, cfg: dict[str, Any], args: argparse.Namespace) -> StreamEngine:
    """The engine the flags describe on `pipe`, prepared with the benchmark's prompt."""
    control = None
    if getattr(args, "controlnet", None):
        n = len(args.controlnet)
        control = build_control_stack(pipe.unet, args.controlnet, args.control_specs, scales=[args.control_scale] * n)
    engine = StreamEngine(pipe, cfg["t_index_list"], args.width, args.height, cfg_type=args.cfg_type,
                          frame_buffer_size=args.frame_buffer, device=cfg["device"], dtype=cfg["dtype"], control=control)
    engine.prepare("a photo of a cat", num_inference_steps=50, guidance_scale=args.guidance, seed=args.seed)
    return engine
