"""`dreamcam bench`: its flags checked without torch (`dreamcam.cli.bench_args`, shared with
`python -m dreamcam.bench.engine`), then the benchmark (`dreamcam.bench.engine`)."""

from __future__ import annotations

import argparse

from dreamcam.cli.bench_args import add_arguments, check

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    check(args)
    # lazy: torch, diffusers and the model load only once every flag has been checked
    from dreamcam.bench import engine

    return engine.run(args)
