"""ControlNet on the engine's UNet step (engine/controlnet.py), on the tiny pipeline.

- every scale 0 gives the engine's output without ControlNet, bit for bit, in every cfg type;
- the residuals the UNet gets are the ones diffusers' StableDiffusionControlNetImg2ImgPipeline
  gives its UNet for the same latent, timestep, prompt embedding and control image (its UNet and
  ControlNet calls intercepted), and with two ControlNets what MultiControlNetModel gives;
- each row of the stream batch is conditioned on its own frame's control image;
- scale and preprocessor change live, in place.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_frames
from dreamcam import StreamEngine
from dreamcam.engine.controlnet import ControlStack, ControlUnit, build_control_stack
from dreamcam.engine.preprocessors import Canny, InputImage, SoftEdge
from dreamcam.errors import ConfigError
from dreamcam.models.controlnet import tiny_controlnet
from PIL import Image

SIZE = 64


@pytest.fixture(scope="module")
def nets(tiny_pipe):
    return [tiny_controlnet(tiny_pipe.unet, seed=s) for s in (0, 1)]


def stack(nets, preps=("canny",), scales=(1.0,)):
    table = {"canny": Canny, "softedge": SoftEdge, "input": InputImage}
    return ControlStack([ControlUnit(net, {p: table[p]()}, scale=s, name=f"net{i}")
                         for i, (net, p, s) in enumerate(zip(nets, preps, scales))])


def run(pipe, control, *, t_index=(20, 35), cfg="self", n=4, guidance=1.4, batch=True):
    e = StreamEngine(pipe, list(t_index), SIZE, SIZE, cfg_type=cfg, use_denoising_batch=batch, control=control)
    e.prepare("a watercolor fox", negative_prompt="blurry", guidance_scale=guidance, seed=3)
    return torch.cat([e.process(x) for x in random_frames(n, SIZE, SIZE)])


@pytest.mark.parametrize("cfg,batch", [("none", True), ("self", True), ("initialize", True), ("full", True),
                                       ("self", False)])
def test_scale_zero_is_the_engine_without_controlnet(tiny_pipe, nets, cfg, batch):
    plain = run(tiny_pipe, None, cfg=cfg, batch=batch)
    zero = run(tiny_pipe, stack(nets, ("canny", "softedge"), (0.0, 0.0)), cfg=cfg, batch=batch)
    assert torch.equal(plain, zero)
    steered = run(tiny_pipe, stack(nets, ("canny", "softedge"), (1.0, 0.5)), cfg=cfg, batch=batch)
    assert (steered - plain).abs().max() > 1e-3


def test_scale_zero_in_graph_mode_runs_the_controlnet_and_still_changes_nothing(tiny_pipe, nets):
    # what the compiled backend does: no host decision per value, so a scale 0 adds residuals * 0
    plain = run(tiny_pipe, None)
    s = stack(nets[:1], scales=(0.0,))
    s.skip_zero = False
    calls = []
    handle = nets[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        assert torch.equal(run(tiny_pipe, s), plain)
    finally:
        handle.remove()
    assert calls, "the ControlNet did not run"


def _intercept(module, into: list):
    def hook(_m, args, kwargs, out):
        into.append((args, kwargs, out))
    return module.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_residuals_are_what_diffusers_controlnet_img2img_gives_its_unet(tiny_pipe, nets, guidance):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    net = nets[0]
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=tiny_pipe.vae, text_encoder=tiny_pipe.text_encoder, tokenizer=tiny_pipe.tokenizer, unet=tiny_pipe.unet,
        controlnet=net, scheduler=tiny_pipe.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    frame = random_frames(1, SIZE, SIZE, seed=9)[0]
    control = Canny()(frame)  # what dreamcam's canny gives, handed to diffusers as an image
    assert set(control.unique().tolist()) <= {0.0, 1.0} and control.mean() > 0.01
    control_pil = Image.fromarray((control[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    unet_calls, net_calls = [], []
    hooks = [_intercept(tiny_pipe.unet, unet_calls), _intercept(net, net_calls)]
    try:
        pipe(prompt="a watercolor fox", image=(frame + 1) / 2, control_image=control_pil, strength=0.5,
             num_inference_steps=4, guidance_scale=guidance, controlnet_conditioning_scale=0.7, output_type="latent",
             generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    assert unet_calls and len(unet_calls) == len(net_calls)

    s = ControlStack([ControlUnit(net, {"canny": Canny()}, scale=0.7)])
    s.allocate(1, 1, False, SIZE, SIZE, torch.device("cpu"), torch.float32)
    s.feed(frame)
    for (uargs, ukw, _), (nargs, nkw, _) in zip(unet_calls, net_calls):
        sample, t = uargs[0], uargs[1]
        ehs = ukw["encoder_hidden_states"]
        # the control image diffusers gave its ControlNet is dreamcam's, row for row
        rows = sample.shape[0]
        assert torch.equal(nkw["controlnet_cond"], s.units[0].images.expand(rows, -1, -1, -1))
        layout = ("full", 0) if rows == 2 else ("none", 0)
        got = s.residuals(sample, t, layout, {"encoder_hidden_states": ehs})
        want_down, want_mid = ukw["down_block_additional_residuals"], ukw["mid_block_additional_residual"]
        assert len(got["down_block_additional_residuals"]) == len(want_down)
        for a, b in zip(got["down_block_additional_residuals"], want_down):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["mid_block_additional_residual"], want_mid, rtol=1e-5, atol=1e-6)
        assert want_mid.abs().max() > 0


def test_the_engine_unet_gets_multicontrolnet_residuals_row_by_row(tiny_pipe, nets):
    """Two ControlNets in the stream batch (2 steps, 2 frames per call, cfg initialize): the
    UNet's residuals are diffusers' MultiControlNetModel's for the UNet's own batch, and each
    row's control image is its own frame's."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    s = stack(nets, ("canny", "input"), (0.8, 1.3))
    e = StreamEngine(tiny_pipe, [20, 35], SIZE, SIZE, cfg_type="initialize", frame_buffer_size=2, control=s)
    e.prepare("a fox", negative_prompt="blurry", guidance_scale=1.5, seed=1)
    seen = []
    hook = _intercept(tiny_pipe.unet, seen)
    frames = [torch.cat(random_frames(2, SIZE, SIZE, seed=k)) for k in range(3)]
    try:
        for x in frames:
            e.process(x)
    finally:
        hook.remove()
    (args, kw, _) = seen[-1]
    sample, t = args[0], args[1]
    # rows (step-major, F=2): [uncond of step 0 | step 0: frame 2 | step 1: frame 1]
    imgs = [torch.cat([frames[2], frames[2], frames[1]])]
    conds = [torch.cat([Canny()(x) for x in imgs[0].split(1)]), InputImage()(imgs[0])]
    for u, c in zip(s.units, conds):
        assert torch.equal(torch.cat([u.images[:2], u.images]), c)
    multi = MultiControlNetModel(list(nets))
    down, mid = multi(sample, t, encoder_hidden_states=kw["encoder_hidden_states"], controlnet_cond=conds,
                      conditioning_scale=[0.8, 1.3], return_dict=False)
    for a, b in zip(kw["down_block_additional_residuals"], down):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kw["mid_block_additional_residual"], mid, rtol=1e-5, atol=1e-6)


def test_scale_and_preprocessor_change_live_in_place(tiny_pipe, nets):
    s = ControlStack([ControlUnit(nets[0], {"canny": Canny(), "softedge": SoftEdge()}, scale=1.0)])
    e = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none", control=s)
    e.prepare("a fox", seed=2)
    x = -torch.ones(1, 3, SIZE, SIZE)
    x[..., 16:48, 20:40] = 0.6  # a bright box: thin canny outlines, soft thick softedge ones
    assert not torch.equal(Canny()(x), SoftEdge()(x))
    scale_t, images = s.units[0].scale_t, s.units[0].images
    full = e.process(x)
    e.set_control_scale(0.0)
    assert s.units[0].scale_t is scale_t and scale_t.item() == 0.0
    off = e.process(x)
    e.set_control_scale(1.0)
    e.set_preprocessor("softedge")
    soft = e.process(x)
    assert s.units[0].images is images
    assert not torch.equal(full, off) and not torch.equal(full, soft)
    plain = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none")
    plain.prepare("a fox", seed=2)
    assert torch.equal(off, plain.process(x))


def test_live_knobs_for_what_is_not_loaded_warn_once_and_change_nothing(tiny_pipe, nets, caplog):
    s = stack(nets[:1])
    e = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none", control=s)
    e.prepare("a fox")
    for _ in range(2):
        e.set_preprocessor("depth")
        e.set_control_scale_2(0.5)
    assert s.units[0].active == "canny"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "not loaded" in warnings[0] and "no ControlNet 2" in warnings[1]
    bare = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none")
    bare.prepare("a fox")
    bare.set_control_scale(0.3)  # a preset with ControlNet knobs on a run without one
    assert "no ControlNet is loaded" in caplog.records[-1].getMessage()


def test_build_control_stack_checks_its_flags(tiny_pipe):
    with pytest.raises(ConfigError, match="one --control per --controlnet"):
        build_control_stack(tiny_pipe.unet, ["tiny"], ["canny", "depth"])
    with pytest.raises(ConfigError, match="--control takes"):
        build_control_stack(tiny_pipe.unet, ["tiny"], ["sketch"])
    with pytest.raises(ConfigError, match="at most 3"):
        build_control_stack(tiny_pipe.unet, ["tiny"] * 4, [])
    s = build_control_stack(tiny_pipe.unet, ["tiny"], ["canny,input"], scales=[0.4], active=["input"])
    assert list(s.units[0].preprocessors) == ["canny", "input"] and s.units[0].active == "input"
    assert s.units[0].scale == 0.4


def test_rows_roll_with_the_frames_and_restart_fresh_after_a_skip(nets):
    s = ControlStack([ControlUnit(nets[0], {"input": InputImage()})])
    s.allocate(3, 1, True, 8, 8, torch.device("cpu"), torch.float32)
    a, b, c, d = (torch.full((1, 3, 8, 8), v) for v in (-0.5, 0.0, 0.5, 1.0))
    unit = lambda v: (v + 1) / 2  # noqa: E731 - the input preprocessor's [0, 1]
    s.feed(a)
    assert torch.equal(s.units[0].images, unit(a).expand(3, -1, -1, -1))  # no history yet: every row
    s.feed(b)
    assert torch.equal(s.units[0].images, torch.cat([unit(b), unit(a), unit(a)]))
    s.set_scale(0, 0.0)
    s.feed(c)  # skipped: not preprocessed, rows left as they were
    assert torch.equal(s.units[0].images[0], unit(b)[0])
    s.set_scale(0, 1.0)
    s.feed(d)  # the rows missed c: they restart from d rather than hold b and a for frames after c
    assert torch.equal(s.units[0].images, unit(d).expand(3, -1, -1, -1))
