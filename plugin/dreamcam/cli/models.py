"""Which model a command runs: the --model family of flags (shared by `run`, `bench` and
`build-engines`) and their checks, without torch (`dreamcam.cli.model_load` loads the model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamcam.engine.control_spec import MAX_CONTROLNETS, PREPROCESSORS, check_control_flags
from dreamcam.errors import ConfigError
from dreamcam.knobs import CONTROL_SLOTS, PARAMS
from dreamcam.models.paths import TINY_MODELS, TINY_VAES

# the tiny VAE the compiled and TensorRT backends run when no --vae is given: TAESD for SD 1.x/2.x
# latents (StreamDiffusion's default too), TAESDXL for SDXL's (`default_tiny_vae`)
DEFAULT_TINY_VAE = TINY_VAES["sd"]
DEFAULT_TINY_VAE_XL = TINY_VAES["sdxl"]


def is_tiny(model: str | None) -> bool:
    """An offline random-weight model name ("tiny", "tiny-sdxl"): built, nothing loaded."""
    return model in TINY_MODELS
GPU_BACKENDS = ("compiled", "tensorrt")
# models dreamcam brings along (nothing to download): tiny and tiny-sdxl have random weights, toy is a small trained
# model with its own tiny VAE (so no other VAE, LoRA or config may be loaded into either)
BUILTIN_MODELS = (*TINY_MODELS, "toy")


def add_model_arguments(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """--model (default None: tiny unless the command builds another), --model-config, --vae, --lcm-lora, --lora."""
    p.add_argument("--model", default=default,
                   help="hub id, local diffusers folder, single .safetensors/.ckpt file (SD 1.x/2.x or SDXL), "
                        "'toy' (small trained model, colour words steer it) or 'tiny' / 'tiny-sdxl' (offline random weights)"
                        + ("" if default else "; default tiny"))
    p.add_argument("--model-config", help="folder (or hub id) with the configs of a single-file checkpoint, for offline use")
    p.add_argument("--vae", help=f"a VAE to use instead of the model's: hub id or folder, e.g. {DEFAULT_TINY_VAE} "
                                 f"or for SDXL {DEFAULT_TINY_VAE_XL} (tiny, fast; the compiled and tensorrt backends "
                                 "load the one of the model's family when none is given)")
    p.add_argument("--lcm-lora", help="LCM-LoRA fused into the model, e.g. latent-consistency/lcm-lora-sdv1-5")
    p.add_argument("--lora", action="append", help="a LoRA fused at a scale: PATH_OR_ID[:SCALE] (repeatable)")


def check_model_flags(args: argparse.Namespace) -> None:
    """The tiny model (also bench's default, --model not given) and an --arch are built from random
    weights, the toy model is a finished small model with its own VAE: flags that load weights into
    them are refused rather than silently ignored; --lora scales are checked."""
    for text in args.lora or []:
        parse_lora(text)
    arch = getattr(args, "arch", None)  # bench and build-engines only
    if args.model not in (None, *BUILTIN_MODELS) and not arch:
        return
    given = [flag for flag, value in (("--vae", args.vae), ("--lcm-lora", args.lcm_lora), ("--lora", args.lora),
                                      ("--model-config", args.model_config)) if value]
    if given and args.model == "toy" and not arch:
        raise ConfigError(f"{', '.join(given)} cannot be used with --model toy (a small model with its own VAE, "
                          "nothing else fits it); drop them, or pass a real model to --model")
    if given:
        built = f"--arch {arch}" if arch else f"--model {args.model or 'tiny'}"
        raise ConfigError(f"{', '.join(given)} cannot be used with {built} (random weights, nothing is loaded); "
                          "drop them, or pass a real model to --model")


def parse_lora(text: str) -> tuple[str, float]:
    """'style.safetensors:0.8' -> ('style.safetensors', 0.8); the scale is optional (1.0)."""
    path, sep, scale = text.rpartition(":")
    if sep:
        try:
            return path, float(scale)
        except ValueError:
            # 'style.safetensors:strong' is a bad scale; 'C:\\loras\\x.safetensors' is a path with a colon
            if Path(path).suffix.lower() in (".safetensors", ".bin") or Path(path).expanduser().exists():
                raise ConfigError(f"--lora {text}: the scale after ':' must be a number such as 0.8, got {scale!r}") from None
    return text, 1.0


def add_controlnet_arguments(p: argparse.ArgumentParser) -> None:
    """--controlnet MODEL and --control PREPROCESSOR (both repeatable, paired in order)."""
    p.add_argument("--controlnet", action="append", metavar="MODEL",
                   help=f"a ControlNet for the model: hub id, folder, .safetensors file, or tiny (random weights); "
                        f"repeatable, up to {MAX_CONTROLNETS}, their residuals summed")
    p.add_argument("--control", action="append", metavar="PREPROCESSOR",
                   help=f"what each --controlnet sees, in the same order: {', '.join(PREPROCESSORS)} "
                        "(depth:ID_OR_FOLDER, depth:tiny); several joined by commas (canny,depth) are all loaded and "
                        "the preprocessor knob switches among them live (default canny)")


def check_controlnet_flags(args: argparse.Namespace) -> list[str]:
    """The --control entry of each --controlnet (canny where none is given); ConfigError when they disagree."""
    controlnets, controls = args.controlnet or [], args.control or []
    if controls and not controlnets:
        raise ConfigError("--control chooses a ControlNet's preprocessor: add --controlnet MODEL (or tiny)")
    return check_control_flags(controlnets, controls)


def check_control_knobs(args: argparse.Namespace, values: dict) -> list[str]:
    """check_controlnet_flags, and the start values of the per-ControlNet knobs (presets, flags)
    checked against what is loaded: a preprocessor knob naming one not loaded, or a knob of a
    ControlNet not given, is a ConfigError now, not a warning once live."""
    specs = check_controlnet_flags(args)
    for i, (sfx, _) in enumerate(CONTROL_SLOTS):
        scale, prep = f"control_scale{sfx}", f"preprocessor{sfx}"
        given = [PARAMS[k].flag for k in (scale, prep) if values.get(k) != PARAMS[k].default]
        if i >= len(specs):
            if given:
                raise ConfigError(f"{', '.join(given)} set ControlNet {i + 1}, but {len(specs)} --controlnet "
                                  "are given: add --controlnet MODEL or drop them")
            continue
        loaded = [one.partition(":")[0] for one in specs[i].split(",")]
        if values.get(prep) and values[prep] not in loaded:
            raise ConfigError(f"{PARAMS[prep].flag} {values[prep]}: ControlNet {i + 1} has {', '.join(loaded)} "
                              f"loaded; add it to its --control ({specs[i]},{values[prep]})")
    return specs
