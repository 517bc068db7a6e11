"""`dreamcam build-engines`: build the TensorRT engines `dreamcam run --backend tensorrt` loads,
ahead of time and with progress, into the engine cache that run reads (`--engines-dir`, else
$DREAMCAM_ENGINES_DIR, else `dreamcam.backends.engines_dir()`'s default)."""

from __future__ import annotations

import argparse

from dreamcam.cli.flags import (
    add_cfg_argument,
    add_engines_dir_argument,
    add_size_arguments,
    check_sizes,
    use_engines_dir,
)
from dreamcam.cli.models import BUILTIN_MODELS, add_model_arguments, check_model_flags
from dreamcam.errors import ConfigError

ARCH_CHOICES = ("sd-turbo", "sd15")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `dreamcam build-engines`: the model and shape options of `dreamcam run` that the engines depend on."""
    add_model_arguments(parser, default="tiny")
    parser.add_argument("--arch", choices=ARCH_CHOICES, default=None,
                        help="instead of --model: an architecture built with --random-weights (for benchmarks)")
    parser.add_argument("--random-weights", action="store_true", help="with --arch: random weights, no download")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (sets the engines' batch range)")
    add_cfg_argument(parser)
    add_size_arguments(parser)
    add_engines_dir_argument(parser)


def check(args: argparse.Namespace) -> None:
    """What can be said before torch and TensorRT load."""
    if args.vae and (args.arch or args.model in BUILTIN_MODELS):
        raise ConfigError("--vae is for --model ID|PATH: the tiny and toy models and --arch come with their own tiny VAE")
    if args.arch and args.model != "tiny":
        raise ConfigError(f"--model {args.model} and --arch {args.arch} disagree; pass one of them")
    if args.arch and not args.random_weights:
        raise ConfigError(f"--arch {args.arch} needs --random-weights (no pretrained weights are downloaded)")
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    check_model_flags(args)
    check_sizes(args)
    use_engines_dir(args)


def run(args: argparse.Namespace) -> int:
    """Export and build (or find cached) the UNet, TAESD encoder and decoder engines; print their paths."""
    check(args)
    # lazy: torch, diffusers and TensorRT load only once every flag has been checked
    from dreamcam.cli import tensorrt_build

    for part, path in tensorrt_build.build(args).items():
        print(f"{part}: {path}")
    return 0
