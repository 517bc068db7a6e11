"""The parts `load_pipeline` swaps in or fuses: another VAE (tiny or full) and LoRAs.

Each source may be a hub id, a folder or a single .safetensors (VAE: also .ckpt) file; what
cannot fit or cannot be found is a `ModelLoadError` of one line.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dreamcam.errors import ModelLoadError
from dreamcam.models.hub import Hub
from dreamcam.models.paths import CHECKPOINT_SUFFIXES, check_checkpoint_file, check_exists, one_line
from dreamcam.models.quiet import quiet_loggers

log = logging.getLogger(__name__)


def load_vae(vae: str, *, hub: Any = None, dtype: torch.dtype = torch.float32):
    """An `AutoencoderTiny` or `AutoencoderKL` from a hub id, folder, or single .safetensors/.ckpt file."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    hub = hub or Hub()
    path = Path(vae).expanduser()
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(f"unsupported VAE file {path.name!r}: expected a .safetensors or .ckpt file or a folder")
        check_checkpoint_file(path)
        log.info("loading VAE %s...", path.name)
        try:
            return AutoencoderKL.from_single_file(str(path), dtype=dtype, local_files_only=not hub.online())
        except Exception as e:
            raise ModelLoadError(f"could not load VAE file {path.name}: {one_line(e)}") from e
    subfolder = None
    if path.is_dir():
        if (path / "model_index.json").is_file() and (path / "vae").is_dir():
            subfolder = "vae"
        elif not (path / "config.json").is_file():
            raise ModelLoadError(f"VAE folder {path} has no config.json; pass a diffusers AutoencoderTiny/AutoencoderKL folder")
        source = str(path)
    else:
        check_exists("VAE", vae)
        source = vae
    online = hub.online()
    log.info("loading VAE %s...", vae)
    try:
        spec = AutoencoderKL.load_config(source, subfolder=subfolder, local_files_only=not online)
        cls = AutoencoderTiny if spec.get("_class_name") == "AutoencoderTiny" else AutoencoderKL
        return cls.from_pretrained(source, subfolder=subfolder, dtype=dtype, local_files_only=not online)
    except Exception as e:
        where = "" if online or path.is_dir() else " (not in the local cache and the hub is not reachable)"
        raise ModelLoadError(f"could not load VAE {vae!r}{where}: {one_line(e)}") from e


def fuse_loras(pipe: Any, adapters: Sequence[tuple[str, float]], *, hub: Any = None) -> None:
    """Load each (id_or_path, scale) LoRA, fuse them all into the weights, then drop the LoRA layers."""
    hub = hub or Hub()
    names = []
    for i, (source, scale) in enumerate(adapters):
        name = f"dreamcam_{i}"
        log.info("loading LoRA %s (scale %g)...", source, scale)
        kwargs = _lora_source(source, hub)
        try:
            # diffusers logs the whole failure (and a warning per component without LoRA keys);
            # the error below says it in one line
            with quiet_loggers("diffusers.loaders", "peft"), warnings.catch_warnings():
                # stacking several adapters is what we mean to do here
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                pipe.load_lora_weights(**kwargs, adapter_name=name)
        except Exception as e:
            raise ModelLoadError(f"LoRA {source!r} does not fit this model: {mismatch_line(e)}") from e
        if not _has_adapter(pipe, name):
            raise ModelLoadError(
                f"LoRA {source!r} does not fit this model: none of its weights match the UNet or text encoder "
                "(is it made for another architecture, e.g. SDXL?)"
            )
        names.append(name)
    log.info("fusing %d LoRA(s) into the weights...", len(names))
    pipe.set_adapters(names, adapter_weights=[float(s) for _, s in adapters])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


def mismatch_line(e: BaseException, what: str = "LoRA") -> str:
    """A loader's size-mismatch error as one line naming the tensor and both shapes (else the error, shortened)."""
    m = re.search(r"size mismatch for (\S+): copying a param with shape (torch\.Size\(\[[^]]*\]\)) from checkpoint, "
                  r"the shape in current model is (torch\.Size\(\[[^]]*\]\))", str(e))
    if m is None:
        return one_line(e)
    return f"{m[1]} has shape {m[2][11:-1]} in the {what} but {m[3][11:-1]} in the model (made for another base model?)"


def _has_adapter(pipe: Any, name: str) -> bool:
    return any(name in names for names in pipe.get_list_adapters().values())


def _lora_source(source: str, hub: Any) -> dict[str, Any]:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ModelLoadError(f"unsupported LoRA file {path.name!r}: expected a .safetensors file or a folder")
        check_checkpoint_file(path)
        return {"pretrained_model_name_or_path_or_dict": str(path.parent), "weight_name": path.name}
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"LoRA folder {path} holds no .safetensors file")
        name = "pytorch_lora_weights.safetensors" if "pytorch_lora_weights.safetensors" in files else files[0]
        if len(files) > 1 and name != "pytorch_lora_weights.safetensors":
            raise ModelLoadError(f"LoRA folder {path} holds several .safetensors files {files}; pass one of them")
        check_checkpoint_file(path / name)
        return {"pretrained_model_name_or_path_or_dict": str(path), "weight_name": name}
    check_exists("LoRA", source)
    if not hub.online():
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(source, local_files_only=True, allow_patterns=["*.safetensors"])
        except Exception as e:
            raise ModelLoadError(
                f"LoRA {source!r} is not in the local Hugging Face cache and the hub is not reachable; "
                "pass a local .safetensors file or folder"
            ) from e
    return {"pretrained_model_name_or_path_or_dict": source, "local_files_only": not hub.online()}
