"""The SDXL UNet's ONNX graph (what TensorRT builds from) takes the added conditioning as inputs and
computes what torch computes (onnxruntime on the CPU), and the TensorRT build and bindings name
those inputs. The builder is tests/trt_standin.py (TensorRT cannot be installed here: it parses
the real ONNX file and checks every input has a profile shape); export, graphs and shapes are real."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import trt_standin
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.onnx_export import export_unet, unet_example_inputs, unet_input_names
from dreamcam.errors import ConfigError

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline(0, arch="sdxl")


@pytest.fixture(scope="module")
def unet_graph(xl, tmp_path_factory):
    """Exported once at batch 2, 64x64 pixels; run below at other batches, sizes and time ids."""
    path = export_unet(xl.unet, tmp_path_factory.mktemp("onnx") / "unet.onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(xl, batch, hw, size=None):
    sample, t, emb, text, ids = unet_example_inputs(xl.unet, batch=batch, latent_hw=hw)
    if size is not None:
        ids = torch.tensor([[*size, 0, 0, *size]], dtype=torch.float32).expand(batch, -1).contiguous()
    return {"sample": sample, "timestep": torch.tensor([999.0, 500.0, 1.0][:batch]), "encoder_hidden_states": emb,
            "text_embeds": text, "time_ids": ids}


def _torch(xl, f):
    with torch.no_grad():
        return xl.unet(f["sample"], f["timestep"], encoder_hidden_states=f["encoder_hidden_states"],
                       added_cond_kwargs={"text_embeds": f["text_embeds"], "time_ids": f["time_ids"]},
                       return_dict=False)[0].numpy()


def _onnx(sess, f):
    return sess.run(None, {k: v.numpy() for k, v in f.items()})[0]


def test_the_graph_inputs_are_named_for_the_added_conditioning(xl, unet_graph):
    assert unet_input_names(xl.unet) == ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert [i.name for i in unet_graph.get_inputs()] == unet_input_names(xl.unet)
    assert unet_input_names(tiny_pipeline(0).unet) == ["sample", "timestep", "encoder_hidden_states"]


@pytest.mark.parametrize("batch,hw", [(2, (8, 8)), (3, (12, 8)), (1, (16, 16))])
def test_sdxl_unet_onnx_matches_torch_at_other_batches_and_sizes(xl, unet_graph, batch, hw):
    f = _feeds(xl, batch, hw, size=(8 * hw[0], 8 * hw[1]))
    ref, got = _torch(xl, f), _onnx(unet_graph, f)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_time_ids_and_pooled_embeddings_are_inputs_not_constants(xl, unet_graph):
    """Another engine size (its time ids) or prompt (its pooled embedding) needs no new graph."""
    base = _feeds(xl, 1, (8, 8), size=(512, 512))
    other_size = {**base, "time_ids": torch.tensor([[768.0, 1024.0, 0.0, 0.0, 768.0, 1024.0]])}
    other_text = {**base, "text_embeds": torch.randn_like(base["text_embeds"])}
    a = _onnx(unet_graph, base)
    for f in (other_size, other_text):
        b = _onnx(unet_graph, f)
        assert np.abs(a - b).max() > 1e-4
        assert np.abs(b - _torch(xl, f)).max() < 1e-4 * max(1.0, np.abs(b).max())


def test_ensure_plans_gives_the_sdxl_inputs_profile_shapes(xl, tmp_path, monkeypatch):
    trt = trt_standin.make("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    engine = StreamEngine(xl, [0, 32], 512, 512, cfg_type="initialize", device="cpu", dtype=torch.float32)
    engine.prepare("a cat")
    trt_backend.ensure_plans(engine, tmp_path)  # the stand-in refuses an input without a profile shape
    unet = next(b for b in trt.builds if "sample" in b["shapes"])
    rows = engine.unet_batch_size  # 2 steps + 1 unconditional row
    assert unet["shapes"]["text_embeds"] == ((1, 32), (rows, 32), (8, 32))
    assert unet["shapes"]["time_ids"] == ((1, 6), (rows, 6), (8, 6))
    assert unet["input_types"]["time_ids"] == "FLOAT" and unet["input_types"]["text_embeds"] == "FLOAT"
    # what the backend binds: the engine's own conditioning buffers' shapes, inside that profile
    assert trt_backend.unet_input_shapes(engine) == {
        "sample": (rows, 4, 64, 64), "timestep": (rows,), "encoder_hidden_states": (rows, 77, 80),
        "text_embeds": (rows, 32), "time_ids": (rows, 6)}


def test_the_unet_call_feeds_every_input_by_name(xl):
    """The backend's UNet stand-in (`TrtCall`) takes the engine's own call: every conditioning
    tensor lands in the input of its name; a call that leaves one out is refused."""
    engine = StreamEngine(xl, [30], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32)
    engine.prepare("a cat")
    call = trt_backend.TrtCall(None, unet_input_names(xl.unet), "noise_pred")
    x, t = torch.zeros(1, 4, 8, 8), torch.zeros(1, dtype=torch.long)
    feeds = call.feeds((x, t), **engine.unet_conditioning)
    assert feeds["time_ids"] is engine.added_cond_kwargs["time_ids"] and feeds["sample"] is x
    assert feeds["text_embeds"] is engine.added_cond_kwargs["text_embeds"]
    with pytest.raises(ConfigError, match="an SDXL engine for an SD model or the reverse"):
        call.feeds((x, t), encoder_hidden_states=engine.unet_conditioning["encoder_hidden_states"])
