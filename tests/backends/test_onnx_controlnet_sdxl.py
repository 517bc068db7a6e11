"""ControlNet with an SDXL model on the TensorRT backend, checked on the CPU.

The two ONNX graphs TensorRT builds for it (the SDXL ControlNet and the SDXL UNet with residual
inputs) take the added conditioning (text_embeds, time_ids) as inputs and compute what torch
computes (onnxruntime), at other batches, sizes and time ids than they were traced at. The plan
build goes through the builder stand-in (tests/trt_standin.py: TensorRT cannot be installed
here; it parses the real ONNX graphs and refuses an input without a profile shape). The engine
calls' copying of `added_cond_kwargs` is checked with real torch buffers in place of a TensorRT
engine's bound ones (no TensorRT engine can exist here)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import trt_standin
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.onnx_export import (
    export_controlnet,
    export_unet_residuals,
    residual_example_inputs,
    residual_names,
    unet_example_inputs,
)
from dreamcam.engine.controlnet import ControlStack, ControlUnit
from dreamcam.engine.preprocessors import Canny
from dreamcam.errors import ConfigError
from dreamcam.models.controlnet import tiny_controlnet

ort = pytest.importorskip("onnxruntime")

SDXL_NAMES = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline(0, arch="sdxl")


@pytest.fixture(scope="module")
def net(xl):
    return tiny_controlnet(xl.unet, seed=0)


@pytest.fixture(scope="module")
def sess(xl, net, tmp_path_factory):
    """Both graphs exported once at batch 2, 64x64 pixels."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {"controlnet": export_controlnet(net, xl.unet, folder / "controlnet.onnx"),
             "unet": export_unet_residuals(xl.unet, folder / "unet_residuals.onnx")}
    return {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}


def _conditioning(xl, batch, hw):
    sample, _, emb, text, _ = unet_example_inputs(xl.unet, batch=batch, latent_hw=hw)
    ids = torch.tensor([[8.0 * hw[0], 8.0 * hw[1], 0, 0, 8.0 * hw[0], 8.0 * hw[1]]]).expand(batch, -1).contiguous()
    return sample, torch.tensor([999.0, 500.0, 1.0][:batch]), emb, {"text_embeds": text, "time_ids": ids}


def _close(got, ref):
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_both_graphs_take_the_added_conditioning_as_named_inputs(sess, xl):
    n = len(residual_example_inputs(xl.unet)) - 1
    assert [i.name for i in sess["controlnet"].get_inputs()] == [*SDXL_NAMES, "controlnet_cond", "conditioning_scale"]
    assert [i.name for i in sess["unet"].get_inputs()] == [*SDXL_NAMES, *residual_names(n)]


@pytest.mark.parametrize("batch,hw,scale", [(2, (8, 8), 1.0), (3, (12, 8), 0.6), (1, (16, 16), 0.0)])
def test_sdxl_controlnet_onnx_matches_torch(xl, net, sess, batch, hw, scale):
    sample, t, emb, added = _conditioning(xl, batch, hw)
    cond = (torch.rand(batch, 3, 8 * hw[0], 8 * hw[1]) > 0.8).float()
    with torch.no_grad():
        down, mid = net(sample, t, encoder_hidden_states=emb, controlnet_cond=cond, conditioning_scale=scale,
                        added_cond_kwargs=added, return_dict=False)
    feeds = {"sample": sample, "timestep": t, "encoder_hidden_states": emb, **added, "controlnet_cond": cond,
             "conditioning_scale": torch.tensor([scale])}
    got = sess["controlnet"].run(residual_names(len(down)), {k: v.numpy() for k, v in feeds.items()})
    for g, r in zip(got, [*down, mid]):
        _close(g, r.numpy())
    if scale == 0.0:
        assert all(np.abs(g).max() == 0 for g in got)
    else:
        assert np.abs(got[-1]).max() > 0
        # the added conditioning is an input, not a constant: other time ids give other residuals
        other = {**feeds, "time_ids": feeds["time_ids"] * 2}
        moved = sess["controlnet"].run(["mid"], {k: v.numpy() for k, v in other.items()})[0]
        assert np.abs(moved - got[-1]).max() > 1e-4


@pytest.mark.parametrize("batch,hw", [(2, (8, 8)), (3, (12, 8))])
def test_sdxl_unet_with_residual_inputs_onnx_matches_torch(xl, sess, batch, hw):
    sample, t, emb, added = _conditioning(xl, batch, hw)
    res = residual_example_inputs(xl.unet, batch=batch, latent_hw=hw)
    with torch.no_grad():
        ref = xl.unet(sample, t, encoder_hidden_states=emb, added_cond_kwargs=added,
                      down_block_additional_residuals=res[:-1], mid_block_additional_residual=res[-1],
                      return_dict=False)[0].numpy()
        plain = xl.unet(sample, t, encoder_hidden_states=emb, added_cond_kwargs=added, return_dict=False)[0].numpy()
    feeds = {"sample": sample, "timestep": t, "encoder_hidden_states": emb, **added,
             **dict(zip(residual_names(len(res) - 1), res))}
    got = sess["unet"].run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    _close(got, ref)
    assert np.abs(ref - plain).max() > 1e-3  # the residuals are used, not folded away
    other = {**feeds, "text_embeds": torch.randn_like(added["text_embeds"])}
    assert np.abs(sess["unet"].run(None, {k: v.numpy() for k, v in other.items()})[0] - got).max() > 1e-4


def test_an_sd_controlnet_for_an_sdxl_unet_is_refused_in_one_line(xl, tmp_path):
    sd_net = tiny_controlnet(tiny_pipeline(0).unet)
    with pytest.raises(ConfigError, match="another architecture"):
        export_controlnet(sd_net, xl.unet, tmp_path / "cn.onnx")


@pytest.fixture
def engine(xl, net):
    control = ControlStack([ControlUnit(net, {"canny": Canny()})])
    e = StreamEngine(xl, [0, 32], 512, 512, cfg_type="self", device="cpu", dtype=torch.float32, control=control)
    e.prepare("a fox")
    return e


def test_ensure_plans_gives_the_sdxl_controlnet_parts_profile_shapes_for_the_added_conditioning(
        engine, tmp_path, monkeypatch):
    trt = trt_standin.make("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")

    plans = trt_backend.ensure_plans(engine, tmp_path)  # the stand-in refuses an input without a profile

    assert set(plans) == {"unet_residuals", "vae_encoder", "vae_decoder", "controlnet_0"}
    rows = engine.unet_batch_size
    unet = next(b for b in trt.builds if "down_0" in b["shapes"])
    cn = next(b for b in trt.builds if "controlnet_cond" in b["shapes"])
    for build in (unet, cn):
        assert build["shapes"]["text_embeds"] == ((1, 32), (rows, 32), (8, 32))
        assert build["shapes"]["time_ids"] == ((1, 6), (rows, 6), (8, 6))
    # what the backend binds for both: the engine's own conditioning shapes, inside that profile
    bound = trt_backend.unet_input_shapes(engine)
    assert bound["text_embeds"] == (rows, 32) and bound["time_ids"] == (rows, 6)


def test_cached_attention_with_controlnet_is_still_refused(monkeypatch):
    sd = tiny_pipeline(0)
    engine = StreamEngine(sd, [0, 32], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32,
                          control=ControlStack([ControlUnit(tiny_controlnet(sd.unet), {"canny": Canny()})]))
    monkeypatch.setitem(sys.modules, "tensorrt", trt_standin.make("10.13.0.35"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(type(engine), "attention_active", property(lambda self: True))
    with pytest.raises(ConfigError, match="without cached attention"):
        trt_backend.ensure_plans(engine)


def test_the_engine_calls_copy_added_cond_kwargs_into_the_bound_buffers(engine):
    """Stand-in for a TrtEngine (none can exist here): its input names and bound torch buffers."""
    added = engine.unet_conditioning["added_cond_kwargs"]
    bound = {n: torch.zeros_like(t) for n, t in added.items()}
    trt_engine = types.SimpleNamespace(names=[*SDXL_NAMES, "controlnet_cond"], buffers=bound)
    trt_backend.copy_added(trt_engine, added)
    for name, t in added.items():
        assert torch.equal(bound[name], t) and bound[name].data_ptr() != t.data_ptr()
    with pytest.raises(ConfigError, match="an SDXL engine for an SD model or the reverse"):
        trt_backend.copy_added(trt_engine, None)
    sd_engine = types.SimpleNamespace(names=["sample", "timestep", "encoder_hidden_states"], buffers={})
    trt_backend.copy_added(sd_engine, None)
    with pytest.raises(ConfigError, match="no added conditioning"):
        trt_backend.copy_added(sd_engine, added)
