"""Pipelines the engine runs on: the offline tiny pipeline and the loader for real models.

`tiny_pipeline` builds a random-weight Stable-Diffusion-architecture pipeline entirely from
configs (no download): a small UNet, a TAESD-style `AutoencoderTiny`, a small CLIP text encoder
and a CLIP tokenizer built from a byte-level vocabulary written here. Tests, demos and CI use it.
`load_pipeline` (defined in `dreamcam.models.loading`, re-exported here) loads real models; the VAE and
LoRA steps it runs (`load_vae`, `fuse_loras`) live at the bottom of this file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dreamcam.errors import ModelLoadError
from dreamcam.models.hub import Hub
from dreamcam.models.loading import (  # load_pipeline: the loader for real models lives in loading.py
    CHECKPOINT_SUFFIXES,
    check_checkpoint_file,
    check_exists,
    load_pipeline,  # noqa: F401
    one_line,
)

log = logging.getLogger(__name__)


def _quiet_imports() -> None:
    # transformers warns about torchvision at import time; dreamcam never uses image processors.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _byte_level_vocab() -> dict[str, int]:
    """The 256 byte-level symbols of CLIP's BPE, each bare and with the end-of-word suffix.

    With no merges every word tokenizes to its characters: a real CLIP tokenizer (same
    normalisation, pre-tokenisation, special tokens and 77-token limit) that needs no file.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[s] = len(vocab)
    return vocab


def tiny_tokenizer(max_length: int = 77):
    _quiet_imports()
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=max_length)


def tiny_pipeline(seed: int = 0, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A random-weight tiny SD-architecture `StableDiffusionPipeline`, built offline.

    Same component classes and data flow as SD 1.x / sd-turbo (UNet2DConditionModel with
    cross-attention, AutoencoderTiny with an 8x latent, CLIPTextModel, LCMScheduler), with
    widths small enough that a 512x512 frame runs in milliseconds on one CPU core.
    The same `seed` always gives the same weights.
    """
    _quiet_imports()
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = len(_byte_level_vocab())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            # attention only at 1/4 of the latent size, so a 512x512 frame stays cheap on a CPU
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1,
                pad_token_id=vocab_size - 1,
            )
        )
    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return move_pipeline(pipe, device, dtype)


def move_pipeline(pipe: Any, device: str | torch.device | None, dtype: torch.dtype | None):
    """Move a pipeline only where it is not already (a no-op move still logs warnings)."""
    cur_device, cur_dtype = pipeline_device_dtype(pipe)
    device = torch.device(device) if device is not None else cur_device
    dtype = dtype or cur_dtype
    if (device, dtype) != (cur_device, cur_dtype):
        with quiet_loggers("diffusers"):
            pipe.to(device=device, dtype=dtype)
    return pipe


def pipeline_device_dtype(pipe: Any) -> tuple[torch.device, torch.dtype]:
    return pipe.unet.device, pipe.unet.dtype

# ---------------------------------------------------------------- VAE and LoRA handling for load_pipeline


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
            raise ModelLoadError(f"LoRA {source!r} does not fit this model: {_mismatch(e)}") from e
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


def _mismatch(e: BaseException) -> str:
    m = re.search(r"size mismatch for (\S+): copying a param with shape (torch\.Size\(\[[^]]*\]\)) from checkpoint, "
                  r"the shape in current model is (torch\.Size\(\[[^]]*\]\))", str(e))
    if m is None:
        return one_line(e)
    return f"{m[1]} has shape {m[2][11:-1]} in the LoRA but {m[3][11:-1]} in the model (made for another base model?)"


@contextlib.contextmanager
def quiet_loggers(*loggers: str) -> Iterator[None]:
    """Silence these loggers for the block (their chatter is replaced by dreamcam's own message)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


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
