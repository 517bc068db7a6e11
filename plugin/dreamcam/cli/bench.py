"""`dreamcam bench`: its flags (`dreamcam.cli.bench_args`, shared with `python -m
dreamcam.bench.engine`) checked without torch, then the benchmark (`dreamcam.bench.engine`)."""

from __future__ import annotations

import argparse

from dreamcam.cli.bench_args import add_arguments
from dreamcam.cli.flags import check_sizes, use_engines_dir
from dreamcam.cli.models import check_model_flags
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

__all__ = ["add_arguments", "check", "run"]


def check(args: argparse.Namespace) -> None:
    """What can be said before torch loads: model flags, sizes, strength, the engine cache."""
    if args.arch and args.model not in (None, "tiny"):
        raise ConfigError(f"--model {args.model} and --arch {args.arch} disagree; pass one of them")
    if args.random_weights and not args.arch:
        raise ConfigError("--random-weights builds an --arch (sd-turbo or sd15) with random weights; add --arch, "
                          "or drop it to load --model's own weights")
    check_model_flags(args)
    check_sizes(args)
    PARAMS["strength"].validate(args.strength)
    use_engines_dir(args)


def run(args: argparse.Namespace) -> int:
    check(args)
    # lazy: torch, diffusers and the model load only once every flag has been checked
    from dreamcam.bench import engine

    return engine.run(args)
