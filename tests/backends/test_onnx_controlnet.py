"""The ONNX graphs TensorRT builds for ControlNets compute what torch computes (onnxruntime on
the CPU): the ControlNet graph (scale an input, residuals outputs) and the UNet graph that takes
the residuals as inputs, at other batches and sizes than the ones they were traced at."""

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from dreamcam.backends.tensorrt.onnx_export import (  # noqa: E402
    export_controlnet,
    export_unet_residuals,
    residual_example_inputs,
    residual_names,
    unet_example_inputs,
)
from dreamcam.models.controlnet import tiny_controlnet  # noqa: E402
from dreamcam.models.pipelines import tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    pipe = tiny_pipeline(0)
    cn = tiny_controlnet(pipe.unet)
    folder = tmp_path_factory.mktemp("onnx")
    sessions = {
        "controlnet": export_controlnet(cn, pipe.unet, folder / "controlnet.onnx"),
        "unet": export_unet_residuals(pipe.unet, folder / "unet_residuals.onnx"),
    }
    return pipe, cn, {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in sessions.items()}


def _close(got, ref):
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("batch,hw,scale", [(2, (8, 8), 1.0), (3, (12, 8), 0.6), (1, (16, 16), 0.0)])
def test_controlnet_onnx_matches_torch(parts, batch, hw, scale):
    pipe, cn, sess = parts
    sample, _, emb = unet_example_inputs(pipe.unet, batch=batch, latent_hw=hw)
    t = torch.tensor([999.0, 500.0, 1.0][:batch])
    cond = (torch.rand(batch, 3, 8 * hw[0], 8 * hw[1]) > 0.8).float()
    with torch.no_grad():
        down, mid = cn(sample, t, encoder_hidden_states=emb, controlnet_cond=cond, conditioning_scale=scale,
                       return_dict=False)
    feeds = {"sample": sample, "timestep": t, "encoder_hidden_states": emb, "controlnet_cond": cond,
             "conditioning_scale": torch.tensor([scale])}
    got = sess["controlnet"].run(residual_names(len(down)), {k: v.numpy() for k, v in feeds.items()})
    for g, r in zip(got, [*down, mid]):
        _close(g, r.numpy())
    if scale == 0.0:
        assert all(np.abs(g).max() == 0 for g in got)
    else:
        assert np.abs(got[-1]).max() > 0


@pytest.mark.parametrize("batch,hw", [(2, (8, 8)), (3, (12, 8))])
def test_unet_with_residual_inputs_onnx_matches_torch(parts, batch, hw):
    pipe, _, sess = parts
    sample, _, emb = unet_example_inputs(pipe.unet, batch=batch, latent_hw=hw)
    t = torch.tensor([999.0, 500.0, 1.0][:batch])
    res = residual_example_inputs(pipe.unet, batch=batch, latent_hw=hw)
    with torch.no_grad():
        ref = pipe.unet(sample, t, encoder_hidden_states=emb, down_block_additional_residuals=res[:-1],
                        mid_block_additional_residual=res[-1], return_dict=False)[0].numpy()
        plain = pipe.unet(sample, t, encoder_hidden_states=emb, return_dict=False)[0].numpy()
    feeds = {"sample": sample, "timestep": t, "encoder_hidden_states": emb,
             **dict(zip(residual_names(len(res) - 1), res))}
    got = sess["unet"].run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    _close(got, ref)
    assert np.abs(ref - plain).max() > 1e-3  # the residuals are used, not folded away
