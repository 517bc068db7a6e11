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
from dreamcam.cli.models import DEFAULT_TINY_VAE, add_model_arguments, check_model_flags, load_model
from dreamcam.errors import ConfigError, DeviceError

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
    if args.vae and (args.arch or args.model == "tiny"):
        raise ConfigError("--vae is for --model ID|PATH: the tiny model and --arch come with their own tiny VAE")
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
    import torch

    from dreamcam.backends.tensorrt.backend import check_capturable, ensure_plans, import_tensorrt
    from dreamcam.engine.stream import StreamEngine, strength_to_t_index_list

    import_tensorrt()
    if not torch.cuda.is_available():
        raise DeviceError("build-engines needs a CUDA GPU: TensorRT builds for the GPU it runs on")
    device, dtype = torch.device("cuda"), torch.float16
    if args.arch:
        from dreamcam.models.archs import arch_pipeline  # lazy: as above

        pipe = arch_pipeline(args.arch, device=device, dtype=dtype)
    else:
        # the tiny VAE dreamcam run loads for this backend, so the cached engines are the ones it finds
        if args.model != "tiny":
            args.vae = args.vae or DEFAULT_TINY_VAE
        pipe = load_model(args, device, dtype, "tensorrt")
    engine = StreamEngine(pipe, strength_to_t_index_list(0.5, args.steps), args.width, args.height,
                          cfg_type=args.cfg_type, device=device, dtype=dtype)
    engine.prepare("")
    check_capturable(engine, "tensorrt")  # a full VAE: said before minutes of export and build
    for part, path in ensure_plans(engine).items():
        print(f"{part}: {path}")
    return 0
