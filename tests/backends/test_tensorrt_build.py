"""The TensorRT build on TensorRT 10 and 11, checked on the CPU.

TensorRT 11 dropped `BuilderFlag.FP16`: every network is strongly typed and takes its precision
from the ONNX graph. So the FP16 engines depend on two things tested here: the export on a GPU is
fp16 throughout (and as accurate as torch's own fp16, run through onnxruntime), and the build asks
for a strongly typed network with no precision flag. The builder itself is a stand-in
(tests/trt_standin.py: TensorRT cannot be installed here); the graphs, the export and the profile
shapes it checks are the real ones.
"""

import logging
import sys

import numpy as np
import onnx
import pytest
import torch

import trt_standin
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.onnx_export import export_unet, export_vae_decoder, export_vae_encoder, unet_example_inputs
from dreamcam.errors import DeviceError

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def pipes():
    return tiny_pipeline(0, dtype=torch.float16), tiny_pipeline(0, dtype=torch.float32)


def _types(path):
    model = onnx.load(str(path))
    name = onnx.TensorProto.DataType.Name
    io = {v.name: name(v.type.tensor_type.elem_type) for v in list(model.graph.input) + list(model.graph.output)}
    weights = {name(t.data_type) for t in model.graph.initializer if t.data_type in
               (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)}
    return io, weights


def _run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0].astype(np.float32)


def test_the_fp16_export_is_fp16_and_as_close_to_fp32_as_torch_fp16(pipes, tmp_path):
    """What a strongly typed build turns into an FP16 engine: fp16 in, fp16 weights, fp16 out (the
    timestep stays float32, cast inside the graph), and no less accurate than torch in fp16."""
    p16, p32 = pipes
    torch.manual_seed(0)
    sample, t, emb = unet_example_inputs(p16.unet, batch=2, latent_hw=(8, 8))
    image = (torch.rand(1, 3, 64, 64) * 2 - 1).half()
    latents = torch.randn(1, 4, 8, 8).half()
    cases = {
        "unet": (export_unet, p16.unet, {"sample": sample, "timestep": t, "encoder_hidden_states": emb},
                 lambda m, f: m(f["sample"], f["timestep"], encoder_hidden_states=f["encoder_hidden_states"]).sample,
                 p32.unet),
        "vae_encoder": (export_vae_encoder, p16.vae, {"images": image}, lambda m, f: m.encoder(f["images"]), p32.vae),
        "vae_decoder": (export_vae_decoder, p16.vae, {"latents": latents}, lambda m, f: m.decoder(f["latents"]),
                        p32.vae),
    }
    for part, (export, module, feeds, call, module32) in cases.items():
        path = export(module, tmp_path / f"{part}.onnx")
        io, weights = _types(path)
        assert weights == {"FLOAT16"}, (part, weights)
        assert {k: v for k, v in io.items() if k != "timestep"} == dict.fromkeys(set(io) - {"timestep"}, "FLOAT16")
        assert io.get("timestep", "FLOAT") == "FLOAT"
        with torch.no_grad():
            ref = call(module32, {k: v.float() for k, v in feeds.items()}).numpy()
            torch16 = call(module, feeds).float().numpy()
        graph16 = _run(path, feeds)
        err_graph, err_torch = np.abs(graph16 - ref).max(), np.abs(torch16 - ref).max()
        assert err_graph <= 2 * err_torch + 2e-3, (part, err_graph, err_torch)


@pytest.fixture()
def fp16_engine(pipes):
    return StreamEngine(pipes[0], [0, 32], 256, 192, cfg_type="self", device="cpu", dtype=torch.float16)


@pytest.mark.parametrize("version", ["10.13.0.35", "11.4.0.106"])
def test_ensure_plans_builds_strongly_typed_fp16_plans_on_tensorrt_10_and_11(version, fp16_engine, tmp_path,
                                                                           monkeypatch, capfd):
    trt = trt_standin.make(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")

    plans = trt_backend.ensure_plans(fp16_engine, tmp_path)

    assert set(plans) == {"unet", "vae_encoder", "vae_decoder"}
    for part, path in plans.items():
        assert path.exists() and path.name.startswith(f"{part}_")
        assert path.name.endswith(f"_fp16_trt{version}_NVIDIA-H100-80GB-HBM3.plan")
    assert not list(tmp_path.glob("*.partial"))
    assert len(trt.builds) == 3
    strongly_typed = 1 << (1 if version.startswith("10.") else 0)  # the flag's number in each version's NvInfer.h
    for b in trt.builds:
        assert b["flags"] == strongly_typed
        assert b["config_flags"] == set()  # precision comes from the fp16 graph
    unet = next(b for b in trt.builds if "sample" in b["shapes"])
    assert unet["input_types"] == {"sample": "FLOAT16", "timestep": "FLOAT", "encoder_hidden_states": "FLOAT16"}
    rows = fp16_engine.unet_batch_size  # 2 steps + 1 (RCFG self) rows
    assert unet["shapes"]["sample"][1] == (rows, 4, 24, 32)
    assert unet["shapes"]["encoder_hidden_states"][1] == (rows, 77, fp16_engine.unet.config.cross_attention_dim)
    assert "Tactic selection" in capfd.readouterr().err  # the build's progress

    again = trt_backend.ensure_plans(fp16_engine, tmp_path)  # cached: no export, no build
    assert again == plans and len(trt.builds) == 3


def test_a_precision_flag_on_a_strongly_typed_network_is_what_the_standin_refuses(tmp_path, pipes):
    """The stand-in's check is live: TensorRT 10's old weakly typed FP16 request fails there."""
    trt = trt_standin.make("10.13.0.35")
    path = export_vae_decoder(pipes[0].vae, tmp_path / "dec.onnx")
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(trt_backend.network_flags(trt))
    assert trt.OnnxParser(network, None).parse_from_file(str(path))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("latents", (1, 4, 8, 8), (1, 4, 8, 8), (1, 4, 8, 8))
    config.add_optimization_profile(profile)
    with pytest.raises(trt_standin.BuildRefused, match="strongly typed"):
        builder.build_serialized_network(network, config)
    assert not hasattr(trt_standin.make("11.4.0.106").BuilderFlag, "FP16")


def test_engine_tensor_types_map_to_torch_buffers():
    dt = trt_standin.DataType
    assert trt_backend.torch_dtype(dt.HALF) is torch.float16
    assert trt_backend.torch_dtype(dt.BF16) is torch.bfloat16  # trt.nptype has no bfloat16
    assert trt_backend.torch_dtype(dt.FLOAT) is torch.float32
    with pytest.raises(DeviceError, match="FP8 has no torch buffer type"):
        trt_backend.torch_dtype(dt.FP8)


def test_tensorrt_versions_outside_10_and_11(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", trt_standin.make("8.6.1"))
    with pytest.raises(DeviceError, match=r"TensorRT 8.6.1 is too old: the tensorrt backend needs 10 or 11"):
        trt_backend.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt_standin.make("12.0.0"))
    trt_backend._warn_newer.cache_clear()
    with caplog.at_level(logging.WARNING, logger="dreamcam.backends.tensorrt.backend"):
        trt_backend.import_tensorrt()
        trt_backend.import_tensorrt()
    warned = [r for r in caplog.records if "newer than the 10 and 11" in r.getMessage()]
    assert len(warned) == 1 and "pip install 'tensorrt<12'" in warned[0].getMessage()


def test_builds_share_one_timing_cache_per_tensorrt_and_gpu(fp16_engine, pipes, tmp_path, monkeypatch, caplog):
    """A second model of the same architecture (a fine-tune, a fused LoRA) times none of its layers
    again; a damaged cache, or one from another GPU, is replaced with a warning, never fatal."""
    version, gpu = "11.4.0.106", "NVIDIA H100 80GB HBM3"
    trt = trt_standin.make(version, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    cache = tmp_path / "timing_trt11.4.0.106_NVIDIA-H100-80GB-HBM3.cache"
    assert trt_backend.timing_cache_name(version, gpu) == cache.name

    trt_backend.ensure_plans(fp16_engine, tmp_path)
    first = trt.builds[:]
    assert first[0]["timed"] == first[0]["layers"] > 0  # a new cache: the UNet times every layer
    assert all(b["timed"] < b["layers"] for b in first[1:])  # the VAE's convolutions were timed for the UNet
    assert cache.exists()

    other = StreamEngine(tiny_pipeline(1, dtype=torch.float16), [0, 32], 256, 192, cfg_type="self", device="cpu",
                         dtype=torch.float16)  # other weights: other plans, the same layers
    plans = trt_backend.ensure_plans(other, tmp_path)
    assert len(trt.builds) == 6 and len(list(tmp_path.glob("*.plan"))) == 6
    assert [b["timed"] for b in trt.builds[3:]] == [0, 0, 0]

    cache.write_bytes(b"\x00 not a timing cache")
    for p in plans.values():
        p.unlink()
    with caplog.at_level(logging.WARNING, logger="dreamcam.backends.tensorrt.backend"):
        trt_backend.ensure_plans(other, tmp_path)
    assert any("could not read the timing cache" in r.getMessage() for r in caplog.records)
    assert trt.builds[6]["timed"] == trt.builds[6]["layers"]
    assert trt.Builder(None).create_builder_config().create_timing_cache(cache.read_bytes()) is not None

    elsewhere = trt_standin.make(version, "NVIDIA H200").Builder(None).create_builder_config()
    cache.write_bytes(elsewhere.create_timing_cache(b"").serialize())  # same name, another GPU's header
    for p in plans.values():
        p.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dreamcam.backends.tensorrt.backend"):
        trt_backend.ensure_plans(other, tmp_path)
    assert any("from another TensorRT or GPU" in r.getMessage() for r in caplog.records)
    assert trt.builds[9]["timed"] == trt.builds[9]["layers"]
    assert not list(tmp_path.glob("*.partial"))
