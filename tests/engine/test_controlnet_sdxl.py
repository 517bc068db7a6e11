"""ControlNet on an SDXL pipeline (the tiny SDXL architecture), eager, on the CPU.

The engine builds the UNet's conditioning in one place (`unet_conditioning`: the prompt's token
embeddings and, for SDXL, the pooled text embeddings and time ids); the ControlNet gets the same
keyword arguments. Checked here: every scale 0 is the engine without ControlNet, bit for bit; a
scale above 0 changes the frames; and the residuals the UNet gets are the ones diffusers'
StableDiffusionXLControlNetImg2ImgPipeline gives its UNet for the same latent, timestep,
conditioning and control image (its UNet and ControlNet calls intercepted).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_frames
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.engine.controlnet import ControlStack, ControlUnit
from dreamcam.engine.preprocessors import Canny
from dreamcam.models.controlnet import tiny_controlnet
from PIL import Image

SIZE = 64


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline(arch="sdxl")


@pytest.fixture(scope="module")
def net(xl):
    return tiny_controlnet(xl.unet, seed=0)


def run(pipe, control, n=3):
    e = StreamEngine(pipe, [20, 35], SIZE, SIZE, cfg_type="self", control=control)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    return torch.cat([e.process(x) for x in random_frames(n, SIZE, SIZE)])


def test_sdxl_controlnet_scale_zero_is_the_engine_without_it_and_scale_one_steers(xl, net):
    plain = run(xl, None)
    zero = run(xl, ControlStack([ControlUnit(net, {"canny": Canny()}, scale=0.0)]))
    assert torch.equal(plain, zero)
    steered = run(xl, ControlStack([ControlUnit(net, {"canny": Canny()}, scale=1.0)]))
    assert (steered - plain).abs().max() > 1e-3


def _intercept(module, into: list):
    def hook(_m, args, kwargs, out):
        into.append((args, kwargs, out))
    return module.register_forward_hook(hook, with_kwargs=True)


def test_sdxl_residuals_are_what_diffusers_sdxl_controlnet_img2img_gives_its_unet(xl, net):
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    pipe = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=xl.vae, text_encoder=xl.text_encoder, text_encoder_2=xl.text_encoder_2, tokenizer=xl.tokenizer,
        tokenizer_2=xl.tokenizer_2, unet=xl.unet, controlnet=net, scheduler=xl.scheduler,
        force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    frame = random_frames(1, SIZE, SIZE, seed=9)[0]
    control = Canny()(frame)
    control_pil = Image.fromarray((control[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    unet_calls, net_calls = [], []
    hooks = [_intercept(xl.unet, unet_calls), _intercept(net, net_calls)]
    try:
        pipe(prompt="a watercolor fox", image=(frame + 1) / 2, control_image=control_pil, strength=0.5,
             num_inference_steps=4, guidance_scale=1.0, controlnet_conditioning_scale=0.7, output_type="latent",
             height=SIZE, width=SIZE, generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    assert unet_calls and len(unet_calls) == len(net_calls)

    s = ControlStack([ControlUnit(net, {"canny": Canny()}, scale=0.7)])
    s.allocate(1, 1, False, SIZE, SIZE, torch.device("cpu"), torch.float32)
    s.feed(frame)
    for (uargs, ukw, _), (nargs, nkw, _) in zip(unet_calls, net_calls):
        sample, t = uargs[0], uargs[1]
        cond = {"encoder_hidden_states": ukw["encoder_hidden_states"], "added_cond_kwargs": ukw["added_cond_kwargs"]}
        got = s.residuals(sample, t, ("none", 0), cond)
        for a, b in zip(got["down_block_additional_residuals"], ukw["down_block_additional_residuals"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["mid_block_additional_residual"], ukw["mid_block_additional_residual"],
                                   rtol=1e-5, atol=1e-6)
        assert ukw["mid_block_additional_residual"].abs().max() > 0
