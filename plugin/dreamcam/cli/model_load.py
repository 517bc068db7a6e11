"""The one model loader of `run`, `bench` and `build-engines`: the pipeline their --model flags
name (`dreamcam.cli.models`, checked before this module loads torch)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dreamcam.cli.console import say
from dreamcam.cli.models import BUILTIN_MODELS, DEFAULT_TINY_VAE, DEFAULT_TINY_VAE_XL, GPU_BACKENDS, is_tiny, parse_lora
from dreamcam.models.loading import load_pipeline, model_family
from dreamcam.models.paths import TINY_MODELS
from dreamcam.models.pipelines import tiny_pipeline


def default_tiny_vae(model: str) -> str:
    """The tiny VAE of the model's family: TAESDXL for an SDXL model (read from its files without
    loading it), else TAESD."""
    return DEFAULT_TINY_VAE_XL if model_family(model) == "sdxl" else DEFAULT_TINY_VAE


def load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, backend: str = "eager"):
    """The pipeline the flags name; a GPU backend without --vae gets the tiny VAE it needs, or,
    where that cannot be loaded, the model's own (auto then runs eager, and says so)."""
    t0 = time.perf_counter()
    say(f"loading model {args.model} on {device} ...")
    if is_tiny(args.model):
        pipe = tiny_pipeline(seed=0, device=device, dtype=dtype, arch=TINY_MODELS[args.model])
    else:
        vae, optional = args.vae, False
        if vae is None and backend in GPU_BACKENDS and args.model not in BUILTIN_MODELS:  # toy: its own tiny VAE
            vae, optional = default_tiny_vae(args.model), True
            say(f"VAE: {vae} (the {backend} backend runs a tiny VAE; --vae to choose another)")
        loras = [parse_lora(s) for s in (args.lora or [])]
        pipe = load_pipeline(
            args.model, config=args.model_config, vae=vae, lcm_lora=args.lcm_lora, loras=loras,
            device=device, dtype=dtype, progress=sys.stderr.isatty(), vae_optional=optional,
        )
    say(f"model ready in {time.perf_counter() - t0:.1f} s")
    return pipe
