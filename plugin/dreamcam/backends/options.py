"""The compiled backend's speed knobs as data and flags, without importing torch.

`dreamcam run` and `dreamcam bench` both take them (`add_knob_arguments`); `CompiledBackend`
and `StepModules` (backends/compiled/backend.py) apply them. Defaults are today's measured behaviour;
docs/performance.md and `tools/gpu_sweep.sh` say which knob is worth what on a GPU.
"""

from __future__ import annotations

import argparse
from typing import Any

from dreamcam.errors import ConfigError

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("whole", "blocks")
_TUNED = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False}
INDUCTOR_PRESETS: dict[str, dict[str, bool]] = {
    "default": {},
    "tuned": _TUNED,
    "freeze": {"freezing": True},
    "tuned-freeze": {**_TUNED, "freezing": True},
}
# the knobs as CompiledBackend keyword arguments, with their defaults
KNOB_DEFAULTS: dict[str, Any] = {"fuse_qkv": False, "inductor": "default", "compile_mode": "default",
                                 "compile_scope": "whole", "overlap_stages": False, "parallel_frames": False,
                                 "fp8_linear": False, "cudnn_exhaustive": False}


def add_knob_arguments(p: argparse.ArgumentParser) -> None:
    """--fuse-qkv, --inductor, --compile-mode, --compile-scope, --overlap-stages, --parallel-frames,
    --fp8-linear, --cudnn-exhaustive (compiled backend only)."""
    p.add_argument("--fuse-qkv", action="store_true", help="compiled backend: fused attention q/k/v projections")
    p.add_argument("--inductor", default="default", choices=tuple(INDUCTOR_PRESETS),
                   help="compiled backend: Inductor preset (tuned: conv_1x1_as_mm, coordinate descent, no epilogue "
                        "fusion; freeze: constant-folded weights)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="compiled backend: torch.compile mode (max-autotune-no-cudagraphs: minutes more to start)")
    p.add_argument("--compile-scope", default="whole", choices=COMPILE_SCOPES,
                   help="compiled backend: compile whole modules, or each repeated block (shorter first start)")
    p.add_argument("--overlap-stages", action="store_true",
                   help="compiled backend: TAESD encode/decode of the neighbouring frames run beside the UNet on "
                        "streams of their own (two-deep throughput; same results)")
    p.add_argument("--parallel-frames", action="store_true",
                   help="compiled backend: the two frames in flight run at once on two streams, where frames carry "
                        "no state (1 step, --cfg none or full; two-deep throughput; same results)")
    p.add_argument("--fp8-linear", action="store_true",
                   help="compiled backend: UNet transformer projections as FP8 matmuls, scales calibrated at start "
                        "(Ada/Hopper GPUs; frames differ from fp16 by a few levels)")
    p.add_argument("--cudnn-exhaustive", action="store_true",
                   help="compiled backend: cuDNN tries every convolution algorithm, not its first 10 (longer start)")


def changed_knobs(args: argparse.Namespace) -> list[str]:
    """The knob flags given with a non-default value, as written on the command line."""
    return [f"--{k.replace('_', '-')}" for k, v in KNOB_DEFAULTS.items() if getattr(args, k) != v]


def check_knobs(args: argparse.Namespace, chosen: str) -> None:
    """Knobs given for a run whose backend is not `compiled`: one clear line, never ignored."""
    changed = changed_knobs(args)
    if chosen != "compiled" and changed:
        verb = "tunes" if len(changed) == 1 else "tune"
        raise ConfigError(f"{', '.join(changed)} {verb} the compiled backend; this run uses {chosen}: "
                          "add --backend compiled (CUDA) or drop them")
    if args.overlap_stages and args.parallel_frames:
        raise ConfigError("--overlap-stages and --parallel-frames are two ways to use the frames in flight and "
                          "do not combine: pick one")


def knob_options(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs as CompiledBackend keyword arguments."""
    return {k: getattr(args, k) for k in KNOB_DEFAULTS}
