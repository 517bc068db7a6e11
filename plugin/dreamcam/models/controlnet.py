"""Load a ControlNet for the loaded model: hub id, diffusers folder, single file, or "tiny".

`load_controlnet(source, unet)` returns a diffusers `ControlNetModel` that fits `unet`; one
that cannot fit (made for another base model: SDXL's for SD 1.5, SD 2's for SD 1.5) is a
`ModelLoadError` of one line naming the mismatch, checked from its config before any weight is
read where possible, like a LoRA's (models/components.py). "tiny" builds a random-weight
ControlNet from the UNet itself (`ControlNetModel.from_unet`) with its zero-initialised
convolutions re-initialised (the residual outputs, and the control image embedding's last), so
its residuals are not zero and depend on the control image: for tests and benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dreamcam.errors import ModelLoadError
from dreamcam.models.components import mismatch_line
from dreamcam.models.hub import Hub
from dreamcam.models.paths import CHECKPOINT_SUFFIXES, HUB_ID, check_checkpoint_file, looks_like_path, one_line
from dreamcam.models.quiet import quiet_imports, quiet_loggers

log = logging.getLogger(__name__)

# what must agree between a ControlNet and the UNet it steers (the residuals are added block by block)
_MUST_MATCH = ("cross_attention_dim", "block_out_channels", "in_channels", "addition_embed_type")


def tiny_controlnet(unet: Any, seed: int = 0):
    """A random-weight ControlNet matching `unet` (its encoder copied, as training starts), with
    the convolutions that are zero at the start of training (the residual outputs and the last
    of the control image embedding) drawn at random instead."""
    quiet_imports()
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 16, 32, 32))
        # zero at the start of training: the output convolutions (else every residual is 0) and
        # the control image embedding's last one (else the control image changes nothing)
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.reset_parameters()  # torch's default init: residuals of the order of the features
        # eight default-initialised convolutions shrink the control image's signal ~1e4-fold: scale
        # the embedding's output to unit spread, so the control image steers as much as the latent
        emb = net.controlnet_cond_embedding
        with torch.no_grad():
            torch.nn.init.zeros_(emb.conv_out.bias)
            probe = (torch.rand(2, 3, 64, 64) > 0.9).float()  # edge-map-like
            emb.conv_out.weight.div_(emb(probe).std().clamp_min(1e-12))
    with quiet_loggers("diffusers"):
        return net.to(device=unet.device, dtype=unet.dtype)


def load_controlnet(source: str, unet: Any, *, hub: Any = None):
    """A `ControlNetModel` for `unet` from "tiny", a hub id, a folder (config.json) or a single
    .safetensors/.ckpt file. ModelLoadError (one line) when missing, unreadable or not fitting."""
    if source == "tiny":
        log.info("building a tiny random-weight ControlNet from the UNet...")
        return tiny_controlnet(unet)
    quiet_imports()
    from diffusers import ControlNetModel

    hub = hub or Hub()
    dtype = unet.dtype
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(f"unsupported ControlNet file {path.name!r}: expected a .safetensors or .ckpt file, "
                                 "a diffusers folder or a hub id")
        check_checkpoint_file(path)
        log.info("loading ControlNet %s...", path.name)
        try:
            net = ControlNetModel.from_single_file(str(path), torch_dtype=dtype, local_files_only=not hub.online())
        except Exception as e:
            raise ModelLoadError(f"could not load ControlNet file {path.name}: {mismatch_line(e, 'ControlNet')}") from e
        check_fits(net.config, unet.config, path.name)
        return net.to(device=unet.device)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"ControlNet folder {path} has no config.json; pass a diffusers ControlNetModel folder "
                                 "or a single .safetensors file")
        src, online = str(path), False
    else:
        if looks_like_path(source) or not HUB_ID.match(source):
            raise ModelLoadError(f"ControlNet path {source!r} does not exist; pass a folder, a .safetensors file, "
                                 "a hub id like lllyasviel/control_v11p_sd15_canny, or tiny")
        src, online = source, hub.online()
    with hub.guard():
        try:
            config = ControlNetModel.load_config(src, local_files_only=not online)
        except Exception as e:
            where = "" if online or path.is_dir() else " (not in the local cache and the hub is not reachable)"
            raise ModelLoadError(f"could not load ControlNet {source!r}{where}: {one_line(e)}") from e
        check_fits(config, unet.config, source)
        log.info("loading ControlNet %s...", source)
        try:
            net = ControlNetModel.from_pretrained(src, torch_dtype=dtype, local_files_only=not online)
        except Exception as e:
            raise ModelLoadError(f"could not load ControlNet {source!r}: {mismatch_line(e, 'ControlNet')}") from e
    return net.to(device=unet.device)


def check_fits(cn: Any, unet: Any, name: str) -> None:
    """ModelLoadError when the ControlNet config `cn` cannot steer a UNet of config `unet`."""
    for key in _MUST_MATCH:
        a, b = _get(cn, key), _get(unet, key)
        if a is None and b is None:
            continue
        if key == "block_out_channels":
            a, b = list(a or ()), list(b or ())
        if a != b:
            hint = " (made for another base model, e.g. SDXL or SD 2?)" if key in ("cross_attention_dim",
                                                                                  "addition_embed_type") else ""
            raise ModelLoadError(f"ControlNet {name!r} does not fit this model: its {key} is {a} but the UNet's is "
                                 f"{b}{hint}; use a ControlNet trained for this base model")


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)
