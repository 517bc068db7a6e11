"""Load a real Stable Diffusion pipeline for the engine: hub id, diffusers folder or checkpoint file.

`load_pipeline` returns a diffusers `StableDiffusionPipeline` ready for `StreamEngine`: LCM
scheduler, no safety checker, optional tiny VAE, LCM-LoRA and LoRAs fused into the weights (the
UNet then runs at full speed, with no LoRA layers left in it), on the requested device and dtype.

The hub is only contacted when it answers within `hub.HUB_PROBE_TIMEOUT_S`; otherwise (or with
`HF_HUB_OFFLINE=1`) everything loads from the local Hugging Face cache, and a model that is not
there fails at once with a `ModelLoadError` saying how to pass a local folder or file instead.
Every failure a user can cause is a `ModelLoadError` (one line, cause chained).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dreamcam.errors import ConfigError, ModelLoadError
from dreamcam.models.components import fuse_loras, load_vae
from dreamcam.models.hub import Hub
from dreamcam.models.paths import (
    CHECKPOINT_SUFFIXES,
    HUB_ID,
    check_checkpoint_file,
    check_exists,
    is_checkpoint_path,
    looks_like_path,
    one_line,
)
from dreamcam.models.pipelines import TOY_MODEL_DIR, move_pipeline, tiny_pipeline

log = logging.getLogger(__name__)

SCHEDULERS = ("lcm", "keep")
# Components StreamEngine drives; a pipeline with a second text encoder (SDXL) needs other conditioning.
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_NO_WEIGHTS_HINT = (
    "pass a local diffusers folder (--model ./my-model-folder), a single checkpoint file "
    "(--model ./model.safetensors), or use --model toy (the small model shipped with dreamcam) or "
    "--model tiny (random weights) to run without downloads"
)


def load_pipeline(
    id_or_path: str,
    *,
    config: str | None = None,
    vae: str | None = None,
    lcm_lora: str | None = None,
    loras: Sequence[tuple[str, float]] = (),
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    scheduler: str = "lcm",
    progress: bool = True,
    vae_optional: bool = False,
):
    """Load a Stable Diffusion 1.x/2.x-style pipeline for `StreamEngine`.

    id_or_path: "tiny" (the offline random-weight pipeline, seed 0), "toy" (the small trained
        model shipped in the package, loaded as the diffusers folder it is), a diffusers folder
        (`save_pretrained` layout, with model_index.json), a single original-layout checkpoint
        (.safetensors or .ckpt, as downloaded from model sites), or a hub id such as
        "stabilityai/sd-turbo" (from the local cache when the hub cannot be reached).
    config: for a single checkpoint file, a diffusers folder (or hub id) of the same
        architecture to take component configs, tokenizer and scheduler from; without it
        diffusers infers the architecture and fetches its configs from the hub.
    vae: hub id or folder of an `AutoencoderTiny` (e.g. "madebyollin/taesd") or an
        `AutoencoderKL`, or a single .safetensors/.ckpt `AutoencoderKL` file; replaces the
        pipeline's VAE.
    lcm_lora: hub id, folder or .safetensors file of an LCM-LoRA, fused at scale 1.
    loras: (id_or_path, scale) pairs, fused at the given scale (any float; 1 is the LoRA as
        trained, 0 leaves the weights unchanged).
    device: "cuda", "cpu", ...; default CUDA when available, else CPU.
    dtype: torch dtype or name ("float16", "fp16", "float32", "bfloat16"); default float16 on
        CUDA, float32 elsewhere.
    scheduler: "lcm" (an LCMScheduler built from the model's scheduler config, what the
        engine runs) or "keep" (leave the model's own scheduler on the pipeline).
    progress: show diffusers / hub progress bars while loading and downloading.
    vae_optional: a `vae` that cannot be loaded (a hub id not cached while offline, say) is
        skipped with a warning and the model's own VAE kept, instead of failing the load.

    Raises ModelLoadError (model cannot be found or read, LoRA does not fit) or ConfigError
    (bad argument).
    """
    # 1. Check inputs
    if not isinstance(id_or_path, (str, os.PathLike)) or not str(id_or_path).strip():
        raise ConfigError(f"model must be 'tiny', 'toy', a hub id, a folder or a checkpoint file, got {id_or_path!r}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    lora_list = [(str(p), _check_scale(p, s)) for p, s in _check_loras(loras)]
    # a mistyped VAE or LoRA path is said now, not after the base model has loaded
    check_exists("VAE", vae)
    for source in [lcm_lora] + [p for p, _ in lora_list]:
        check_exists("LoRA", source)
    device = _resolve_device(device)
    dtype = _resolve_dtype(dtype, device)
    hub = Hub()
    with _progress_bars(progress), hub.guard():
        # 2. Base pipeline (a single-file checkpoint loads a required VAE with it)
        in_base = vae is not None and is_checkpoint_path(str(id_or_path)) and not vae_optional
        pipe = _load_base(str(id_or_path), config=config, vae=vae if in_base else None, hub=hub, dtype=dtype)
        # 3. VAE swapped in
        if vae is not None and not in_base:
            try:
                pipe.vae = load_vae(vae, hub=hub, dtype=dtype)
            except ModelLoadError as e:
                if not vae_optional:
                    raise
                log.warning("%s; keeping the model's own VAE", e)
        # 4. LoRAs, fused into the weights on the target device (faster there, same result)
        move_pipeline(pipe, device, dtype)
        adapters = ([(lcm_lora, 1.0)] if lcm_lora else []) + lora_list
        if adapters:
            fuse_loras(pipe, adapters, hub=hub)
    # 5. What the engine expects
    if scheduler == "lcm":
        from diffusers import LCMScheduler

        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.safety_checker = None
    pipe.register_to_config(requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=not progress)
    log.info("model ready: %s on %s (%s)", id_or_path, device, str(dtype).removeprefix("torch."))
    return pipe


def toy_pipeline(*, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None):
    """The trained toy pipeline shipped with dreamcam: `load_pipeline("toy", ...)`.

    A tiny SD-architecture model trained on procedural pictures (tools/train_toy.py): its output
    is a softened copy of the input, and the colour words of `pipelines.TOY_TINTS` in the prompt
    tint it. Runs live on a CPU at small sizes (128x128); for demos and for tests that judge the
    picture, not for pretty pictures.
    """
    return load_pipeline("toy", device=device, dtype=dtype, progress=False)


def _load_base(id_or_path: str, *, config: str | None, vae: str | None, hub: Hub, dtype: torch.dtype):
    if id_or_path == "tiny":
        log.info("building the tiny random-weight pipeline...")
        return tiny_pipeline(0, dtype=dtype)
    if id_or_path == "toy":
        if not (TOY_MODEL_DIR / "model_index.json").is_file():
            raise ModelLoadError(
                f"the toy model is missing from this install ({TOY_MODEL_DIR}); reinstall dreamcam "
                "(pip install .), or train it again with tools/train_toy.py"
            )
        return _load_folder(TOY_MODEL_DIR, dtype)
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return _load_folder(path, dtype)
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(
                f"unsupported model file {path.name!r}: expected a .safetensors or .ckpt checkpoint, "
                "a diffusers folder, a hub id, 'toy' or 'tiny'"
            )
        return _load_single_file(path, config=config, vae=vae, hub=hub, dtype=dtype)
    if id_or_path.startswith(("https://", "http://")) and id_or_path.lower().endswith(CHECKPOINT_SUFFIXES):
        if not hub.online():
            raise ModelLoadError(f"cannot download {id_or_path}: the hub is not reachable; {_NO_WEIGHTS_HINT}")
        return _load_single_file(id_or_path, config=config, vae=vae, hub=hub, dtype=dtype)
    if looks_like_path(id_or_path):
        raise ModelLoadError(f"model path {id_or_path!r} does not exist; check the path, or {_NO_WEIGHTS_HINT}")
    return _load_hub(id_or_path, hub, dtype)


def _load_folder(path: Path, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    index = path / "model_index.json"
    if not index.is_file():
        files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES)
        hint = f"; it holds {files[0]!r}: pass that file instead" if len(files) == 1 else ""
        raise ModelLoadError(
            f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder written by "
            f"save_pretrained, or a single .safetensors/.ckpt checkpoint{hint}"
        )
    _check_index(path, index)
    log.info("loading diffusers pipeline from %s (UNet, VAE, text encoder)...", path)
    try:
        return StableDiffusionPipeline.from_pretrained(
            str(path), dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    except Exception as e:
        raise ModelLoadError(f"could not load the diffusers pipeline in {path}: {one_line(e)}") from e


def _check_index(path: Path, index: Path) -> None:
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{index} is not readable JSON ({one_line(e)}); save the pipeline again") from e
    missing = [c for c in REQUIRED_COMPONENTS if not (isinstance(spec.get(c), list) and spec[c][0])]
    if missing or "text_encoder_2" in spec:
        kind = spec.get("_class_name", "unknown pipeline")
        what = f"lacks {', '.join(missing)}" if missing else "has a second text encoder"
        raise ModelLoadError(
            f"{path} holds a {kind} that {what}; dreamcam runs Stable Diffusion 1.x/2.x-style pipelines "
            f"({', '.join(REQUIRED_COMPONENTS)})"
        )


def _load_single_file(path: Path | str, *, config: str | None, vae: str | None, hub: Hub, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    name = path.name if isinstance(path, Path) else path
    if isinstance(path, Path):
        check_checkpoint_file(path)
    if config is not None and not Path(config).expanduser().is_dir() and not HUB_ID.match(config):
        raise ModelLoadError(f"model config {config!r} is neither a diffusers folder nor a hub id")
    extra: dict[str, Any] = {}
    if vae is not None:
        extra["vae"] = load_vae(vae, hub=hub, dtype=dtype)
    cfg = str(Path(config).expanduser()) if config and Path(config).expanduser().is_dir() else config
    log.info("loading checkpoint %s (UNet, VAE, text encoder)...", name)
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path), config=cfg, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=not hub.online(), **extra,
        )
    except Exception as e:
        if not hub.online() and (config is None or not Path(config).expanduser().is_dir()):
            raise ModelLoadError(
                f"cannot load {name}: a single checkpoint needs the configs of its architecture and the hub "
                "is not reachable; pass --model-config FOLDER (a diffusers folder of the same architecture, "
                f"config= in Python) or go online once ({one_line(e)})"
            ) from e
        raise ModelLoadError(f"could not load checkpoint {name}: {one_line(e)}") from e


def _load_hub(repo_id: str, hub: Hub, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    if not HUB_ID.match(repo_id):
        raise ModelLoadError(f"model {repo_id!r} is not a hub id (owner/name), a folder or a file; {_NO_WEIGHTS_HINT}")
    online = hub.online()
    log.info("loading %s from the %s (UNet, VAE, text encoder)...", repo_id, "hub" if online else "local cache")
    try:
        return StableDiffusionPipeline.from_pretrained(
            repo_id, dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=not online
        )
    except Exception as e:
        if not online:
            raise ModelLoadError(
                f"model {repo_id!r} is not in the local Hugging Face cache and the hub is not reachable; "
                f"{_NO_WEIGHTS_HINT}"
            ) from e
        raise ModelLoadError(f"could not load {repo_id!r} from the hub: {one_line(e)}") from e


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    import huggingface_hub.utils as hf_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = (
        diffusers_logging.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
        hf_utils.are_progress_bars_disabled(),
    )
    if not enabled:
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        hf_utils.disable_progress_bars()
    try:
        yield
    finally:
        (diffusers_logging.enable_progress_bar if saved[0] else diffusers_logging.disable_progress_bar)()
        (transformers_logging.enable_progress_bar if saved[1] else transformers_logging.disable_progress_bar)()
        (hf_utils.disable_progress_bars if saved[2] else hf_utils.enable_progress_bars)()


def _check_loras(loras: Any) -> list[tuple[Any, Any]]:
    try:
        pairs = [tuple(item) for item in loras]
    except TypeError as e:
        raise ConfigError(f"loras must be a list of (path, scale) pairs, got {loras!r}") from e
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"each LoRA must be a (path, scale) pair, got {pair!r}")
    return pairs


def _check_scale(source: Any, scale: Any) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"LoRA scale for {source!r} must be a number, got {scale!r}") from e
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"LoRA scale for {source!r} must be finite, got {scale!r}")
    return value


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device must be 'auto', 'cuda', 'cuda:N' or 'cpu', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
    return dev


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(sorted(_DTYPES))}, got {dtype!r}")
    return _DTYPES[name]
