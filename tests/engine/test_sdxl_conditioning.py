"""SDXL on the engine: what its UNet is called with equals what diffusers' own
`StableDiffusionXLImg2ImgPipeline` calls it with for the same prompt and image size (token
embeddings of both text encoders, pooled embeddings, time ids), on the offline tiny SDXL; the
buffers are filled in place; prompt blends, cross-fades and seed fades reach both the token and
the pooled embeddings. Real diffusers modules throughout, nothing mocked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.control.controller import Controller
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline(0, arch="sdxl")


class UNetCalls:
    """Records the keyword arguments of every call of a UNet (a forward hook: the module runs as is)."""

    def __init__(self, unet) -> None:
        self.calls: list[dict] = []
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        self.calls.append({"encoder_hidden_states": kwargs["encoder_hidden_states"].clone(),
                           **{k: v.clone() for k, v in added.items()}, "batch": args[0].shape[0]})

    def close(self) -> None:
        self._handle.remove()


def _diffusers_call(pipe, prompt, negative, width, height):
    """The first UNet call of diffusers' SDXL img2img pipeline on an image of width x height, with CFG."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    i2i = StableDiffusionXLImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    rec = UNetCalls(pipe.unet)
    try:
        i2i(prompt=prompt, negative_prompt=negative, image=Image.new("RGB", (width, height), (90, 120, 150)),
            strength=0.5, num_inference_steps=2, guidance_scale=1.5, output_type="latent")
    finally:
        rec.close()
    return rec.calls[0]  # rows: [negative, positive]


def _engine_call(pipe, prompt, negative, width, height, cfg_type="full", t_index=(20, 40)):
    e = StreamEngine(pipe, list(t_index), width, height, cfg_type=cfg_type, device="cpu", dtype=torch.float32)
    e.prepare(prompt, negative_prompt=negative or "", guidance_scale=1.5)
    rec = UNetCalls(pipe.unet)
    try:
        e.img2img(np.full((height, width, 3), 100, np.uint8))
    finally:
        rec.close()
    return e, rec.calls[0]


@pytest.mark.parametrize("width,height,negative", [(64, 64, None), (96, 64, "blurry, low quality"),
                                                   (64, 128, None)])
def test_the_unet_gets_what_diffusers_sdxl_img2img_gives_it(xl, width, height, negative):
    ref = _diffusers_call(xl, "a watercolor fox", negative, width, height)
    e, ours = _engine_call(xl, "a watercolor fox", negative, width, height)
    rows = e.unet_batch_size  # cfg "full": 2 steps unconditional, then 2 conditional
    assert ours["batch"] == rows == 4
    for name in ("encoder_hidden_states", "text_embeds", "time_ids"):
        want = torch.cat([ref[name][:1].expand(rows // 2, *ref[name].shape[1:]),
                          ref[name][1:].expand(rows // 2, *ref[name].shape[1:])])
        torch.testing.assert_close(ours[name], want, rtol=0, atol=0, msg=name)
    # time ids: original size, crop top-left, target size, each (height, width) of the engine
    assert ours["time_ids"][0].tolist() == [height, width, 0, 0, height, width]
    assert ours["encoder_hidden_states"].shape[-1] == 32 + 48  # both text encoders, side by side
    if negative is None:  # force_zeros_for_empty_prompt: no negative prompt is zeros, as in diffusers
        assert not ours["text_embeds"][:2].any() and not ours["encoder_hidden_states"][:2].any()


def test_the_engines_encoding_is_diffusers_encode_prompt_and_add_time_ids(xl):
    """Against the two diffusers functions named in the SDXL pipeline, not only against a run."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    e = StreamEngine(xl, [20, 40], 96, 64, cfg_type="self", device="cpu", dtype=torch.float32)
    e.prepare("a neon city")
    cond, uncond, pooled, _ = xl.encode_prompt("a neon city", device="cpu", do_classifier_free_guidance=False)
    tokens, got_pooled = e.split_prompt_embeds(e.encode_prompt("a neon city")[0])
    assert torch.equal(tokens, cond) and torch.equal(got_pooled, pooled) and uncond is None
    i2i = StableDiffusionXLImg2ImgPipeline(**xl.components)
    ids, _ = i2i._get_add_time_ids((64, 96), (0, 0), (64, 96), 6.0, 2.5, (64, 96), (0, 0), (64, 96),
                                   dtype=torch.float32, text_encoder_projection_dim=32)
    cond_kw = e.added_cond_kwargs
    assert torch.equal(cond_kw["time_ids"], ids.expand(e.unet_batch_size, -1))
    assert torch.equal(cond_kw["text_embeds"], pooled.expand(e.unet_batch_size, -1))


@pytest.mark.parametrize("cfg_type,batch", [("none", True), ("self", True), ("initialize", True), ("full", True),
                                            ("self", False), ("full", False)])
def test_every_cfg_type_and_both_batch_modes_run_with_matching_rows(xl, cfg_type, batch):
    e = StreamEngine(xl, [10, 30], 64, 64, cfg_type=cfg_type, use_denoising_batch=batch, device="cpu",
                     dtype=torch.float32)
    e.prepare("a cat", negative_prompt="fog", guidance_scale=1.3)
    rec = UNetCalls(xl.unet)
    try:
        out = e.img2img(np.full((64, 64, 3), 60, np.uint8))
    finally:
        rec.close()
    assert out.shape == (64, 64, 3)
    for call in rec.calls:  # every row of every call has its conditioning
        assert call["text_embeds"].shape == (call["batch"], 32) and call["time_ids"].shape == (call["batch"], 6)
        assert call["encoder_hidden_states"].shape[0] == call["batch"]


def test_setters_write_the_same_buffers_in_place(xl):
    e = StreamEngine(xl, [20, 40], 64, 64, cfg_type="initialize", device="cpu", dtype=torch.float32)
    e.prepare("a cat", negative_prompt="fog", guidance_scale=1.4)
    cond = e.unet_conditioning
    ptrs = [cond["encoder_hidden_states"].data_ptr(), *(t.data_ptr() for t in cond["added_cond_kwargs"].values())]
    before = cond["added_cond_kwargs"]["text_embeds"].clone()
    e.set_prompt("a dog")
    e.set_negative_prompt("rain")
    e.set_strength(0.7)
    after = e.unet_conditioning
    assert ptrs == [after["encoder_hidden_states"].data_ptr(),
                    *(t.data_ptr() for t in after["added_cond_kwargs"].values())]
    u = e.uncond_rows
    dog = e.split_prompt_embeds(e.encode_prompt("a dog")[0])[1]
    rain = e.split_prompt_embeds(e.encode_prompt("", "rain")[1])[1]
    text = after["added_cond_kwargs"]["text_embeds"]
    assert torch.equal(text[u:], dog.expand(e.batch_size, -1)) and torch.equal(text[:u], rain.expand(u, -1))
    assert not torch.equal(text, before)


def test_a_prompt_blend_and_a_cross_fade_reach_the_pooled_embeddings(xl):
    e = StreamEngine(xl, [20, 40], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    now = [0.0]
    store = ParamStore()
    store.set("prompt", "a cat")
    store.set("transition", 0.0)
    with Controller(e, store, clock=lambda: now[0]) as ctl:
        store.set("prompt", "a cat:0.7 | a dog:0.3")
        ctl.wait_encoded()
        ctl.apply()
        pooled = {p: e.split_prompt_embeds(e.encode_prompt(p)[0])[1] for p in ("a cat", "a dog", "a bird")}
        blend = 0.7 * pooled["a cat"] + 0.3 * pooled["a dog"]
        torch.testing.assert_close(e.added_cond_kwargs["text_embeds"], blend.expand(e.batch_size, -1))

        store.set("transition", 2.0)
        store.set("prompt", "a bird")
        ctl.wait_encoded()
        ctl.apply()  # the fade starts at t=0: still the blend
        now[0] = 1.0
        ctl.apply()
        halfway = torch.lerp(blend, pooled["a bird"], 0.5)
        torch.testing.assert_close(e.added_cond_kwargs["text_embeds"][0], halfway[0])
        now[0] = 2.5
        ctl.apply()
        torch.testing.assert_close(e.added_cond_kwargs["text_embeds"][0], pooled["a bird"][0], rtol=0, atol=0)
        assert e.prompt == "a bird"

        noise = e.init_noise.clone()
        store.set("seed", 1234)
        ctl.apply()  # a seed fade: the noise moves, the conditioning does not
        now[0] = 3.5
        ctl.apply()
        assert not torch.equal(e.init_noise, noise)
        torch.testing.assert_close(e.added_cond_kwargs["text_embeds"][0], pooled["a bird"][0], rtol=0, atol=0)


def test_packing_round_trips_and_a_wrong_shape_is_one_line(xl):
    e = StreamEngine(xl, [30], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    tokens, pooled = torch.randn(1, 77, 80), torch.randn(1, 32)
    packed = e.pack_prompt_embeds(tokens, pooled)
    assert packed.shape == (1, 78, 80)
    t2, p2 = e.split_prompt_embeds(packed)
    assert torch.equal(t2, tokens) and torch.equal(p2, pooled)
    with pytest.raises(ConfigError, match=r"pass what engine.encode_prompt returns"):
        e.set_prompt_embeds(tokens)  # the token embeddings alone
    e.set_prompt_embeds(packed)
    assert torch.equal(e.added_cond_kwargs["text_embeds"][0], pooled[0])
    assert torch.equal(e.prompt_embeds, packed)


def test_an_sd_engine_passes_no_added_conditioning(tiny_pipe):
    e = StreamEngine(tiny_pipe, [30], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    assert e.added_cond_kwargs is None and set(e.unet_conditioning) == {"encoder_hidden_states"}
    assert e.unet_conditioning["encoder_hidden_states"] is e.prompt_embeds


def test_an_sdxl_unet_without_the_second_text_encoder_is_one_line(xl):
    from diffusers import StableDiffusionPipeline

    half = StableDiffusionPipeline(vae=xl.vae, text_encoder=xl.text_encoder, tokenizer=xl.tokenizer, unet=xl.unet,
                                   scheduler=xl.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with pytest.raises(ConfigError, match="has no text_encoder_2: pass a diffusers StableDiffusionXLPipeline"):
        StreamEngine(half, [30], 64, 64, device="cpu", dtype=torch.float32)
