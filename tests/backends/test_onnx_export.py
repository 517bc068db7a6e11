"""The ONNX graphs TensorRT builds from compute what torch computes (onnxruntime on the CPU)."""

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from dreamcam.backends.tensorrt.onnx_export import export_all, unet_example_inputs  # noqa: E402
from dreamcam.models.pipelines import tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(0)


@pytest.fixture(scope="module")
def graphs(pipe, tmp_path_factory):
    """Exported once, at batch 2 and 64x64 pixels; the tests run them at other shapes."""
    paths = export_all(pipe.unet, pipe.vae, tmp_path_factory.mktemp("onnx"), latent_hw=(8, 8))
    return {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}


def _run(sess, feeds):
    return sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


@pytest.mark.parametrize("batch,hw", [(2, (8, 8)), (3, (12, 8)), (1, (16, 16))])
def test_unet_onnx_matches_torch_at_other_batches_and_sizes(pipe, graphs, batch, hw):
    sample, _, emb = unet_example_inputs(pipe.unet, batch=batch, latent_hw=hw)
    t = torch.tensor([999.0, 500.0, 1.0][:batch])
    with torch.no_grad():
        ref = pipe.unet(sample, t, encoder_hidden_states=emb, return_dict=False)[0].numpy()
    got = _run(graphs["unet"], {"sample": sample, "timestep": t, "encoder_hidden_states": emb})
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_unet_onnx_timestep_is_an_input_not_a_constant(pipe, graphs):
    sample, _, emb = unet_example_inputs(pipe.unet, batch=1)
    a = _run(graphs["unet"], {"sample": sample, "timestep": torch.tensor([999.0]), "encoder_hidden_states": emb})
    b = _run(graphs["unet"], {"sample": sample, "timestep": torch.tensor([10.0]), "encoder_hidden_states": emb})
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("batch,hw", [(1, (64, 64)), (2, (48, 96))])
def test_vae_encoder_and_decoder_onnx_match_torch(pipe, graphs, batch, hw):
    x = torch.rand(batch, 3, *hw) * 2 - 1
    with torch.no_grad():
        z = pipe.vae.encoder(x)
        y = pipe.vae.decoder(z)
    z_onnx = _run(graphs["vae_encoder"], {"images": x})
    y_onnx = _run(graphs["vae_decoder"], {"latents": z})
    assert z_onnx.shape == (batch, 4, hw[0] // 8, hw[1] // 8)
    assert np.abs(z_onnx - z.numpy()).max() < 1e-4
    assert np.abs(y_onnx - y.numpy()).max() < 1e-4
