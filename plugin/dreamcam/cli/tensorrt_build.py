"""The work of `dreamcam build-engines` once its flags are checked (`dreamcam.cli.build_engines`):
the model loaded as `dreamcam run --backend tensorrt` loads it, then its engines exported and built."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dreamcam.backends.tensorrt.backend import check_capturable, ensure_plans, import_tensorrt
from dreamcam.cli.model_load import load_model
from dreamcam.cli.models import BUILTIN_MODELS, DEFAULT_TINY_VAE
from dreamcam.engine.schedule import strength_to_t_index_list
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import DeviceError
from dreamcam.models.archs import arch_pipeline


def build(args: argparse.Namespace) -> dict[str, Path]:
    """The engine files for the model and shapes the flags name, built where missing."""
    import_tensorrt()
    if not torch.cuda.is_available():
        raise DeviceError("build-engines needs a CUDA GPU: TensorRT builds for the GPU it runs on")
    device, dtype = torch.device("cuda"), torch.float16
    if args.arch:
        pipe = arch_pipeline(args.arch, device=device, dtype=dtype)
    else:
        # the tiny VAE dreamcam run loads for this backend, so the cached engines are the ones it finds
        if args.model not in BUILTIN_MODELS:
            args.vae = args.vae or DEFAULT_TINY_VAE
        pipe = load_model(args, device, dtype, "tensorrt")
    engine = StreamEngine(pipe, strength_to_t_index_list(0.5, args.steps), args.width, args.height,
                          cfg_type=args.cfg_type, device=device, dtype=dtype)
    engine.prepare("")
    check_capturable(engine, "tensorrt")  # a full VAE: said before minutes of export and build
    return ensure_plans(engine)
