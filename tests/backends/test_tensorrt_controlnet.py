"""The TensorRT build with ControlNets, checked on the CPU with the builder stand-in
(tests/trt_standin.py: TensorRT cannot be installed here; it parses the real ONNX graphs and
refuses an input without a profile or a profile shape that disagrees with the graph). The
residual shapes the UNet engine is given are the ones the ControlNet really outputs."""

import sys

import pytest
import torch

import trt_standin
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.onnx_export import residual_names
from dreamcam.engine.controlnet import ControlStack, ControlUnit
from dreamcam.engine.preprocessors import Canny
from dreamcam.models.controlnet import tiny_controlnet

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def engine():
    pipe = tiny_pipeline(0, dtype=torch.float16)
    nets = [tiny_controlnet(pipe.unet, seed=s) for s in (0, 1)]
    control = ControlStack([ControlUnit(n, {"canny": Canny()}) for n in nets])
    e = StreamEngine(pipe, [0, 32], 256, 192, cfg_type="self", device="cpu", dtype=torch.float16, control=control)
    e.prepare("a fox")
    return e


def test_ensure_plans_builds_a_controlnet_engine_each_and_a_unet_with_residual_inputs(engine, tmp_path, monkeypatch):
    trt = trt_standin.make("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")

    plans = trt_backend.ensure_plans(engine, tmp_path)

    assert set(plans) == {"unet_residuals", "vae_encoder", "vae_decoder", "controlnet_0", "controlnet_1"}
    assert plans["controlnet_0"].name != plans["controlnet_1"].name  # each keyed by its own weights
    rows, h, w = engine.unet_batch_size, engine.latent_height, engine.latent_width
    with torch.no_grad():
        down, mid = engine.control.units[0].model(
            torch.randn(rows, 4, h, w, dtype=torch.float16), torch.zeros(rows), encoder_hidden_states=engine.prompt_embeds,
            controlnet_cond=torch.rand(rows, 3, engine.height, engine.width, dtype=torch.float16), return_dict=False)
    real = dict(zip(residual_names(len(down)), [tuple(t.shape) for t in (*down, mid)]))
    assert trt_backend.residual_shapes(engine.unet, rows, h, w) == real
    builds = {tuple(sorted(b["shapes"])): b for b in trt.builds}
    unet = next(b for k, b in builds.items() if "down_0" in k and "controlnet_cond" not in k)
    for name, shape in real.items():
        assert unet["shapes"][name][1] == shape  # opt = the engine's own shape
    nets = [b for k, b in builds.items() if "controlnet_cond" in k]
    assert len(trt.builds) == 5 and len(nets) == 1  # two ControlNets, the same inputs
    assert nets[0]["shapes"]["conditioning_scale"] == ((1,), (1,), (1,))
    assert nets[0]["shapes"]["controlnet_cond"][1] == (rows, 3, engine.height, engine.width)
