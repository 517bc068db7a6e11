"""The one model loader of `run`, `bench` and `build-engines`: the pipeline their --model flags
name (`dreamcam.cli.models`, checked before this module loads torch)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dreamcam.cli.console import say
from dreamcam.cli.models import (
    BUILTIN_MODELS,
    DEFAULT_TINY_VAE,
    DEFAULT_TINY_VAE_XL,
    GPU_BACKENDS,
    check_controlnet_flags,
    is_tiny,
    parse_lora,
)
from dreamcam.engine.controlnet import build_control_stack
from dreamcam.knobs import CONTROL_SLOTS, PARAMS
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


def load_controlnets(args: argparse.Namespace, pipe, values: dict | None = None):
    """The engine's ControlStack from --controlnet / --control (None without --controlnet), at the
    start values of the per-ControlNet knobs in `values` (the store's; default: the knob defaults)."""
    if not getattr(args, "controlnet", None):
        return None
    t0 = time.perf_counter()
    values = values or {}
    specs = getattr(args, "control_specs", None) or check_controlnet_flags(args)
    sfx = [s for s, _ in CONTROL_SLOTS]
    stack = build_control_stack(
        pipe.unet, args.controlnet, specs,
        scales=[values.get(f"control_scale{x}", PARAMS[f"control_scale{x}"].default) for x in sfx],
        active=[values.get(f"preprocessor{x}", "") for x in sfx],
    )
    for i, u in enumerate(stack.units):
        say(f"ControlNet {i + 1}: {u.name}, preprocessor {u.active} (of {', '.join(u.preprocessors)}), scale {u.scale:g}")
    say(f"ControlNets ready in {time.perf_counter() - t0:.1f} s")
    return stack
