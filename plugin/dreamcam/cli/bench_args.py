"""The flags of `dreamcam bench` and their checks that need no torch (see `dreamcam.bench.engine`
for what each mode measures)."""

from __future__ import annotations

import argparse
import os

from dreamcam.backends import BACKENDS
from dreamcam.backends.options import add_knob_arguments
from dreamcam.cli.flags import (
    add_cfg_argument,
    add_device_argument,
    add_engines_dir_argument,
    add_size_arguments,
    check_sizes,
    use_engines_dir,
)
from dreamcam.cli.models import (
    add_controlnet_arguments,
    add_model_arguments,
    check_controlnet_flags,
    check_model_flags,
    is_tiny,
)
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

ARCH_CHOICES = ("tiny", "tiny-sdxl", "sd-turbo", "sd15")
DEFAULT_SWEEP = ("stability", (0.0, 0.5, 0.8))  # --flicker's sweep where the knob table has that knob


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `dreamcam bench` (the CLI calls this, then `run(args)`)."""
    p = parser
    add_model_arguments(p, default=None)
    add_controlnet_arguments(p)
    p.add_argument("--control-scale", type=float, default=PARAMS["control_scale"].default,
                   help="every --controlnet's scale (0: not run on the eager backend)")
    p.add_argument("--arch", choices=ARCH_CHOICES, default=None,
                   help="instead of --model: build an architecture (sd-turbo and sd15 with --random-weights; nothing is downloaded)")
    p.add_argument("--random-weights", action="store_true",
                   help="with --arch: build the architecture with random weights (no download; needed for sd-turbo/sd15)")
    p.add_argument("--steps", type=int, default=1, help="denoising steps per frame")
    p.add_argument("--t-index-list", default=None, help="comma-separated step indices, e.g. 0,16,32,45 (overrides --strength)")
    strength, guidance, seed = PARAMS["strength"], PARAMS["guidance"], PARAMS["seed"]  # as `dreamcam run` starts
    p.add_argument("--strength", type=float, default=strength.default,
                   help=f"{strength.range_text}, mapped onto --steps indices")
    add_cfg_argument(p)
    p.add_argument("--guidance", type=float, default=guidance.default, help=f"guidance scale, {guidance.range_text}")
    add_size_arguments(p)
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    add_device_argument(p)
    add_engines_dir_argument(p)
    p.add_argument("--no-compile", action="store_true", help="compiled backend: capture eager kernels, skip torch.compile")
    p.add_argument("--no-cuda-graph", action="store_true", help="compiled backend: no CUDA graph capture")
    add_knob_arguments(p)
    p.add_argument("--frame-buffer", type=int, default=1, metavar="F",
                   help="frames per UNet call (frame_buffer_size): more throughput, F-1 frames more latency")
    p.add_argument("--frames", type=int, default=200, help="timed frames per side")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames before timing")
    p.add_argument("--seed", type=int, default=seed.default, help="noise seed")
    p.add_argument("--peer", action="store_true", help="also time StreamDiffusion 0.1.1 on the same modules")
    p.add_argument("--loop", action="store_true", help="also time the live loop as `dreamcam run` runs it (1280x720 test pattern -> runner -> null sink) and the engine alone pipelined")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N more frames and list the kernels/ops that take the time "
                        "(use with --no-cuda-graph: a replayed graph hides its kernels)")
    p.add_argument("--bypass", action="store_true",
                   help="time the live loop itself, no model: 1280x720 test pattern -> 512x512 -> 1280x720 virtual camera, one core")
    p.add_argument("--osc", action="store_true",
                   help="time OSC update -> engine parameter latency, and frame timing under a 10,000-message burst")
    p.add_argument("--flicker", action="store_true",
                   help="measure flicker (warping error), fps and latency over a clip for each setting of --sweep")
    p.add_argument("--source", default=None, metavar="file:PATH",
                   help="--flicker: the clip (default: a still scene with camera noise, then a cut, made in a temporary folder)")
    p.add_argument("--sweep", default=None, metavar="KNOB=V1,V2,...",
                   help=f"--flicker: the settings compared side by side, any numeric live knob "
                        f"(default {DEFAULT_SWEEP[0]}={','.join(f'{v:g}' for v in DEFAULT_SWEEP[1])} where that knob "
                        f"exists, else the current settings)")
    p.add_argument("--flicker-rate", type=float, default=0.0, metavar="HZ",
                   help="--loop: also time the loop with the flicker meter sampling HZ pairs a second (dreamcam run's default is 10)")
    p.add_argument("--seconds", type=float, default=5.0, help="--bypass: how long to run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, type=os.path.expanduser, help="also write the JSON object to this file")
    p.add_argument("--timing-gate", default=None, metavar="PREFIX",
                   help="wait for PREFIX.goN before each timed stretch (see dreamcam.bench.gate; used by "
                        "tools/gpu_sweep.py to compile rows side by side and time them one at a time)")


def check(args: argparse.Namespace) -> None:
    """What can be said before torch loads: model flags, sizes, strength, the engine cache."""
    if args.arch and not (args.model is None or is_tiny(args.model)):
        raise ConfigError(f"--model {args.model} and --arch {args.arch} disagree; pass one of them")
    if args.random_weights and not args.arch:
        raise ConfigError("--random-weights builds an --arch (sd-turbo or sd15) with random weights; add --arch, "
                          "or drop it to load --model's own weights")
    check_model_flags(args)
    args.control_specs = check_controlnet_flags(args)
    if args.controlnet and args.peer:
        raise ConfigError("--peer times StreamDiffusion 0.1.1, which runs no ControlNet: drop --peer or --controlnet")
    PARAMS["control_scale"].validate(args.control_scale)
    check_sizes(args)
    PARAMS["strength"].validate(args.strength)
    if not args.flicker and (args.sweep or args.source):
        raise ConfigError(f"{'--sweep' if args.sweep else '--source'} belongs to --flicker; add --flicker")
    if args.flicker:
        extra = [f"--{f}" for f in ("peer", "loop", "profile") if getattr(args, f)]
        if extra:
            raise ConfigError(f"--flicker times the live loop over a clip on its own; drop {' and '.join(extra)}")
        sweep_of(args)
        clip_path(args.source)
    if not args.flicker_rate >= 0:
        raise ConfigError(f"--flicker-rate takes samples per second >= 0, got {args.flicker_rate}")
    use_engines_dir(args)


def parse_sweep(text: str) -> tuple[str, list]:
    """`KNOB=V1,V2,...` -> (knob, checked values): any int or float knob of the knob table."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise ConfigError(f"--sweep takes KNOB=V1,V2,..., e.g. strength=0.3,0.6; got {text!r}")
    param = PARAMS.get(name)
    numeric = [p.name for p in PARAMS.values() if p.kind in (int, float)]
    if param is None or param.kind not in (int, float):
        what = "no live knob" if param is None else f"{param.type_name}, not a number"
        raise ConfigError(f"--sweep {name}: {what}; sweepable knobs: {', '.join(numeric)}")
    out = []
    for v in values.split(","):
        try:
            number = float(v)
        except ValueError:
            raise ConfigError(f"--sweep {name}: {v.strip()!r} is not a number") from None
        out.append(param.validate(number))  # out of range: one line with the knob's range
    return name, out


def sweep_of(args: argparse.Namespace) -> tuple[str | None, list]:
    """The knob and values --flicker compares: --sweep, else DEFAULT_SWEEP where the knob table has
    that knob, else (None, [None]): one row with the current settings."""
    if args.sweep:
        return parse_sweep(args.sweep)
    name, values = DEFAULT_SWEEP
    if name in PARAMS:
        return name, [PARAMS[name].validate(v) for v in values]
    return None, [None]


def clip_path(source: str | None) -> str | None:
    """--source file:PATH (or a plain PATH) -> PATH, checked to exist; None: make the test clip."""
    if source is None:
        return None
    path = source[5:] if source.startswith("file:") else source
    if ":" in source and not source.startswith("file:") and not os.path.exists(path):
        raise ConfigError(f"--flicker reads a video file: --source file:PATH, got {source!r}")
    if not os.path.isfile(path):
        raise ConfigError(f"--source {source}: no such file; write a test clip with python -m dreamcam.bench.clips CLIP.mp4")
    return path
