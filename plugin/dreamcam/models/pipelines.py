"""The offline tiny pipeline, and moving a pipeline to a device and dtype.

`tiny_pipeline` builds a random-weight Stable-Diffusion-architecture pipeline entirely from
configs (no download): a small UNet, a TAESD-style `AutoencoderTiny`, a small CLIP text encoder
and a CLIP tokenizer built from a byte-level vocabulary written here. Tests, demos and CI use it.

The toy model is its trained sibling: the same kind of pipeline (`toy_components` builds it
untrained) with weights shipped in the package (the folder `TOY_MODEL_DIR`, trained by
tools/train_toy.py on procedural pictures), whose output follows its input and whose colour
words (`TOY_TINTS`) tint the picture. It loads with `load_pipeline("toy")` (or `toy_pipeline()`),
the code path of any diffusers folder.

`tiny_pipeline(arch="sdxl")` (`--model tiny-sdxl`) is the same at SDXL's architecture: two text
encoders (CLIPTextModel + CLIPTextModelWithProjection, the second one's pooled output feeding
the UNet) and a UNet with SDXL's added conditioning (addition_embed_type="text_time").
Real models load with `dreamcam.models.loading.load_pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dreamcam.errors import ConfigError
from dreamcam.models.quiet import quiet_imports, quiet_loggers


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
    quiet_imports()
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=max_length)


TINY_ARCHS = ("sd", "sdxl")
# the tiny SDXL's text widths: each encoder's hidden size (different, as SDXL's 768 and 1280 are:
# a single-file loader tells the two encoders apart by them), and the pooled (projected) width
TINY_XL_TEXT_WIDTHS = (32, 48)
TINY_XL_POOLED_WIDTH = 32
TINY_XL_TIME_EMBED_DIM = 8


def tiny_pipeline(seed: int = 0, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  arch: str = "sd"):
    """A random-weight tiny pipeline, built offline: `StableDiffusionPipeline` (arch "sd") or
    `StableDiffusionXLPipeline` (arch "sdxl").

    Same component classes and data flow as SD 1.x / sd-turbo (UNet2DConditionModel with
    cross-attention, AutoencoderTiny with an 8x latent, CLIPTextModel, LCMScheduler), with
    widths small enough that a 512x512 frame runs in milliseconds on one CPU core; "sdxl" adds
    SDXL's second text encoder and the UNet's added conditioning (pooled text embeddings and
    time ids). The same `seed` always gives the same weights.
    """
    if arch not in TINY_ARCHS:
        raise ConfigError(f"tiny_pipeline arch must be one of {', '.join(TINY_ARCHS)}; got {arch!r}")
    quiet_imports()
    if arch == "sdxl":
        return move_pipeline(_tiny_sdxl(seed), device, dtype)
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

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
        text_encoder = CLIPTextModel(_tiny_text_config(32))
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


# The toy model: a diffusers folder inside the package (model_index.json, unet/, vae/, ...).
TOY_MODEL_DIR = Path(__file__).resolve().parent / "toy"
# The words the toy model was trained to follow: word -> (RGB colour the picture is tinted toward,
# how much of the colour replaces the original, 0..1). Any other prompt leaves the colours as they are.
TOY_TINTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "red": ((1.0, 0.3, 0.25), 0.6),
    "green": ((0.3, 1.0, 0.3), 0.6),
    "blue": ((0.25, 0.4, 1.0), 0.6),
    "warm": ((1.0, 0.72, 0.4), 0.5),
    "cold": ((0.45, 0.72, 1.0), 0.5),
    "gray": ((1.0, 1.0, 1.0), 1.0),
    "grey": ((1.0, 1.0, 1.0), 1.0),
    "black and white": ((1.0, 1.0, 1.0), 1.0),
    "monochrome": ((1.0, 1.0, 1.0), 1.0),
}


def toy_components(seed: int = 0):
    """The toy model's untrained (unet, vae, text_encoder, scheduler), built from its configs;
    tools/train_toy.py trains them. Widths are chosen so a 128x128 frame runs live on a CPU."""
    quiet_imports()
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            # the prompt (a colour) acts at 1/2 and 1/4 of the latent size and in the middle block
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        # no residual blocks at full resolution, where a block costs most
        vae = AutoencoderTiny(
            encoder_block_out_channels=(16, 16, 16, 16),
            decoder_block_out_channels=(16, 16, 16, 16),
            num_encoder_blocks=(0, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 0),
        )
        text_encoder = CLIPTextModel(_tiny_text_config(64))
    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    return unet, vae, text_encoder, scheduler


def _tiny_text_config(width: int, **extra: Any):
    from transformers import CLIPTextConfig

    vocab_size = len(_byte_level_vocab())
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                          bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
                          **extra)


def _tiny_sdxl(seed: int):
    """The tiny SDXL pipeline on the CPU in float32 (see `tiny_pipeline`)."""
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            # SDXL: the two encoders' penultimate states side by side, linear projections in the
            # transformers, and the pooled text embedding plus 6 time ids added to the time embedding
            cross_attention_dim=sum(TINY_XL_TEXT_WIDTHS),
            attention_head_dim=8,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TINY_XL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=TINY_XL_POOLED_WIDTH + 6 * TINY_XL_TIME_EMBED_DIM,
            norm_num_groups=8,
        )
        vae = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
        )
        text_encoder = CLIPTextModel(_tiny_text_config(TINY_XL_TEXT_WIDTHS[0]))
        text_encoder_2 = CLIPTextModelWithProjection(
            _tiny_text_config(TINY_XL_TEXT_WIDTHS[1], projection_dim=TINY_XL_POOLED_WIDTH))
    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(), unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_sdxl(pipe: Any) -> bool:
    """An SDXL-architecture pipeline: its UNet takes the added conditioning (pooled text
    embeddings and time ids, addition_embed_type "text_time")."""
    unet = getattr(pipe, "unet", None)
    return getattr(getattr(unet, "config", None), "addition_embed_type", None) == "text_time"


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
