"""Real Stable Diffusion architectures with random weights, for benchmarks (no download).

Speed depends on shapes, not on weight values, so `arch_pipeline("sd-turbo")` builds the
sd-turbo (SD 2.1) UNet, the CLIP-H text encoder and TAESD exactly as shipped, fills them with
random weights and scales every UNet and text-encoder weight by `weight_scale` so fp16
activations stay finite. Nothing here is fit to make pictures.

| name     | UNet                                                           | text encoder             |
| -------- | -------------------------------------------------------------- | ------------------------ |
| sd-turbo | 865.9 M: blocks 320/640/1280/1280, cross-attn 1024, heads 5/10/20/20, linear proj | CLIP-H, 1024 wide, 23 layers |
| sd15     | 859.5 M: blocks 320/640/1280/1280, cross-attn 768, head dim 8   | CLIP-L, 768 wide, 12 layers |

Both use TAESD (`AutoencoderTiny()` defaults, 2.4 M) and the LCM scheduler.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from dreamcam.errors import ConfigError
from dreamcam.models.pipelines import tiny_tokenizer
from dreamcam.models.quiet import quiet_imports

log = logging.getLogger(__name__)

ARCHS = ("sd-turbo", "sd15")

_UNET_COMMON: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32,
)

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd-turbo": dict(
        _UNET_COMMON,
        sample_size=64,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    ),
    "sd15": dict(_UNET_COMMON, cross_attention_dim=768, attention_head_dim=8),
}

TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "sd-turbo": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                     hidden_act="gelu", projection_dim=1024),
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 hidden_act="quick_gelu", projection_dim=768),
}


def check_arch(name: str) -> str:
    if name not in ARCHS:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}; got {name!r}")
    return name


def build_unet(name: str):
    """The architecture's UNet2DConditionModel with default (random) initialisation, on the
    current default device (use `with torch.device(...)` to build on a GPU or on "meta")."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIGS[check_arch(name)])


def build_text_encoder(name: str, *, bos_token_id: int, eos_token_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=eos_token_id, **TEXT_CONFIGS[check_arch(name)])
    return CLIPTextModel(cfg)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def arch_pipeline(
    name: str,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    weight_scale: float = 0.5,
):
    """A `StableDiffusionPipeline` of the named real architecture with random weights.

    Args:
        name: "sd-turbo" or "sd15".
        seed: seeds the random initialisation (same seed, same weights on the same device).
        device, dtype: where the modules live; modules are initialised directly on `device`
            (a GPU builds the 1.2 G parameters in about a second).
        weight_scale: every UNet and text-encoder parameter is multiplied by this (0 < s <= 1)
            so fp16 activations of the random network stay finite.
    """
    quiet_imports()
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline

    check_arch(name)
    if not 0.0 < float(weight_scale) <= 1.0:
        raise ConfigError(f"weight_scale must be in (0, 1], got {weight_scale}")
    device = torch.device(device)
    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)  # also seeds the GPU generator the on-device initialisation draws from
        unet = build_unet(name)
        text_encoder = build_text_encoder(name, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        vae = AutoencoderTiny()
    for module in (unet, text_encoder):
        for p in module.parameters():
            p.mul_(weight_scale)
    log.info("built %s with random weights: UNet %.1f M parameters", name, count_params(unet) / 1e6)
    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, text_encoder, vae):
        module.to(dtype=dtype).eval()
    return pipe
