"""Cached attention on the graphed backends: the shared frame path (`GraphedStep`) with the
compiled backend's fused projections, run on a CPU engine (no CUDA graph here: the graph-mode
shapes, warm-up undo and fused processors are what runs); the TensorRT export with the bank as
inputs and outputs against torch (onnxruntime on the CPU), and its build profile against the
TensorRT builder stand-in (tests/trt_standin.py; TensorRT cannot be installed here). The CUDA
graph and TensorRT runs themselves are the GPU tests at the end."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

import trt_standin
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.compiled.backend import StepModules
from dreamcam.backends.compiled.parallel import check_parallel
from dreamcam.backends.compiled.step import GraphedStep, swap_modules
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.onnx_export import export_unet_bank, unet_bank_example_inputs
from dreamcam.engine.attention import BankedAttnProcessor, self_attention_layers
from dreamcam.errors import ConfigError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _engine(pipe, t_index=(20, 40), cfg="self", size=(64, 64), bank=2, fusion=0.5, device="cpu",
            dtype=torch.float32, f=1):
    e = StreamEngine(pipe, list(t_index), *size, cfg_type=cfg, frame_buffer_size=f, device=device, dtype=dtype)
    e.prepare("a cat", guidance_scale=1.4, seed=3)
    if bank:
        e.set_attn_bank(bank)
    e.set_attn_fusion(fusion)
    return e


def _frames(n, shape=(64, 64, 3), seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape).astype(np.int16)
    return [np.clip(base + rng.integers(-12, 13, shape), 0, 255).astype(np.uint8) for _ in range(n)]


def test_fused_projections_frame_path_follows_eager_with_the_bank():
    """fuse_qkv replaces every processor; the graphed step puts the banked ones back, they run the
    fused to_qkv, read all 4 slots under the mask, and the warm-up frames leave the bank as it was."""
    ref, eng = _engine(tiny_pipeline(0)), _engine(tiny_pipeline(0))
    bank = eng.attention_bank
    ptrs = [t.data_ptr() for t in bank.tensors()]
    worst = 0
    with StepModules(eng, compile=False, fuse_qkv=True) as mods, swap_modules(eng, mods.unet, mods.vae):
        run = GraphedStep(eng, warmup=2)
        layers = self_attention_layers(eng.pipe.unet)
        assert all(isinstance(m.processor, BankedAttnProcessor) and m.fused_projections for _, m in layers)
        assert bank.static and bank.read_slots == 4
        for i, frame in enumerate(_frames(6)):
            out, want = run.process(frame), ref.img2img(frame)
            worst = max(worst, int(np.abs(out.astype(int) - want.astype(int)).max()))
            if i == 2:  # live changes reach the graphed step without new buffers
                for e in (ref, eng):
                    e.set_attn_bank(4)
                    e.set_attn_refresh(2)
                    e.set_attn_fusion(0.8)
        assert [t.data_ptr() for t in bank.tensors()] == ptrs
        eng.set_attn_bank(0)  # under a graph: masked off, the processors stay
        assert all(isinstance(m.processor, BankedAttnProcessor) for _, m in layers)
        run.close()
    eng.release_attention_from_graph()  # as CompiledBackend does once unfusing put the saved processors back
    assert worst <= 1, f"{worst} uint8 levels from eager"
    assert not bank.static
    assert not any(isinstance(m.processor, BankedAttnProcessor) for _, m in self_attention_layers(eng.pipe.unet))


def test_a_graph_captured_without_the_bank_refuses_it_until_closed(tiny_pipe):
    e = _engine(tiny_pipe, bank=0)
    run = GraphedStep(e, warmup=1)
    with pytest.raises(ConfigError, match=r"captured its graph without cached attention: start dreamcam with --attn-bank"):
        e.set_attn_bank(2)
    assert e.attn_bank == 0
    e.set_attn_fusion(0.3)  # the other knobs only store their value
    run.close()
    e.set_attn_bank(1)
    e.set_attn_bank(0)


def test_parallel_frames_refuse_an_engine_with_the_bank(tiny_pipe):
    e = _engine(tiny_pipe, t_index=(35,), cfg="none", bank=1)
    with pytest.raises(ConfigError, match="cached attention"):
        check_parallel(e)
    e.set_attn_bank(0)
    check_parallel(e)


ort = pytest.importorskip("onnxruntime")


def _ort_feeds(sess, args):
    return {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}


def test_unet_bank_onnx_matches_torch_and_serves_other_sizes_and_batches(tmp_path):
    """Exported once from one engine; run for it and for an engine of another size and batch
    (3 steps, cfg full: 6 rows), each with its bank filled by real frames: the prediction and
    every updated bank tensor match the torch UNet writing its bank in place."""
    pipe = tiny_pipeline(0)
    first = _engine(pipe)
    path = export_unet_bank(first, tmp_path / "unet_bank.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in sess.get_outputs()]
    assert outputs[0] == "noise_pred" and outputs[1:] == [n + "_out" for n in first.attention_bank.io_names()]
    for e, size in ((first, 64), (_engine(pipe, t_index=(10, 25, 40), cfg="full", size=(96, 64), bank=3), 96)):
        router_bank = e.attention_bank
        for frame in _frames(4, (64, size, 3)):
            e.img2img(frame)
        e.route_attention()  # this frame's mask and write slot, as the frame step makes them
        assert router_bank.control.mask.any() and router_bank.control.write.any()
        args = [a.clone() for a in unet_bank_example_inputs(e)]
        got = sess.run(None, _ort_feeds(sess, args))
        router_bank.static = True
        with torch.no_grad():
            ref = pipe.unet(args[0], args[1], encoder_hidden_states=args[2], return_dict=False)[0]
        router_bank.static = False
        assert got[0].shape == tuple(ref.shape)
        assert np.abs(got[0] - ref.numpy()).max() < 1e-4
        for out, bank in zip(got[1:], router_bank.io_tensors()):
            assert out.shape == tuple(bank.shape)
            assert np.abs(out - bank.numpy()).max() < 1e-4
        e.set_attn_bank(0)


def test_tensorrt_builds_the_bank_graph_with_a_profile_for_every_bank_input(tmp_path, monkeypatch):
    """The builder stand-in parses the real unet_bank ONNX and refuses a profile that misses an
    input or does not fit the graph's dims; the plan is named apart from the plain UNet's."""
    trt = trt_standin.make("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    e = _engine(tiny_pipeline(0), size=(128, 96), cfg="initialize", bank=2)
    plans = trt_backend.ensure_plans(e, tmp_path)
    assert plans["unet"].name.startswith("unet_bank_")
    unet = next(b for b in trt.builds if "sample" in b["shapes"])
    names = e.attention_bank.io_names()
    assert {"attn_mask", "attn_write", "attn_fusion", *names} <= set(unet["shapes"])
    rows = e.unet_batch_size
    for name, t in zip(names, e.attention_bank.io_tensors()):
        assert unet["shapes"][name][1] == tuple(t.shape)  # opt = the engine's own shape
        assert unet["shapes"][name][1][1] == rows
    e.set_attn_bank(0)
    assert trt_backend.ensure_plans(e, tmp_path)["unet"].name.startswith("unet_")  # the plain graph again
    assert not trt_backend.ensure_plans(e, tmp_path)["unet"].name.startswith("unet_bank")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("knobs", [{}, {"fuse_qkv": True}, {"overlap_stages": True}])
def test_compiled_backend_with_the_bank_follows_eager_on_a_gpu(knobs):
    """torch.compile + one CUDA graph with the bank: same frames as eager (fp16: a few levels),
    live bank/refresh/fusion changes and a reset reach the replayed graph, no bank re-allocation."""
    from dreamcam.backends import make_backend

    def engine():
        return _engine(tiny_pipeline(0, device="cuda", dtype=torch.float16), device="cuda", dtype=torch.float16)

    ref, eng = engine(), engine()
    ptrs = [t.data_ptr() for t in eng.attention_bank.tensors()]
    with make_backend("compiled", eng, **knobs) as b:
        assert b._run.graph is not None
        for i, frame in enumerate(_frames(8)):
            assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
            if i in (2, 5):
                b.fence()
                for e in (ref, eng):
                    e.set_attn_bank(4 if i == 2 else 1)
                    e.set_attn_fusion(0.9)
                    e.reset_attention_bank()
        assert [t.data_ptr() for t in eng.attention_bank.tensors()] == ptrs


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason="needs the tensorrt package (10 or 11) and a CUDA GPU; neither can be installed here")
def test_tensorrt_backend_with_the_bank_follows_eager(tmp_path):
    from dreamcam.backends import make_backend

    def engine():
        return _engine(tiny_pipeline(0, device="cuda", dtype=torch.float16), device="cuda", dtype=torch.float16)

    ref, eng = engine(), engine()
    with make_backend("tensorrt", eng, folder=str(tmp_path)) as b:
        for i, frame in enumerate(_frames(6)):
            assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
            if i == 2:
                b.fence()
                for e in (ref, eng):
                    e.set_attn_bank(3)
                    e.reset_attention_bank()


def test_a_refused_bank_is_one_warning_and_the_loop_runs_on(tiny_pipe, caplog):
    """attn_bank sent over OSC to a graph captured without the bank: the controller logs the
    engine's one line and keeps going (the other knobs of the same change still apply)."""
    from dreamcam.control.controller import Controller
    from dreamcam.knobs import ParamStore

    e = _engine(tiny_pipe, bank=0)
    run = GraphedStep(e, warmup=1)
    store = ParamStore({"slew": 0})  # the knobs land on the next frame, no glide
    with Controller(e, store) as controller:
        store.update({"attn_bank": 2, "attn_fusion": 0.4, "guidance": 2.0})
        controller.apply(run.fence)
    run.close()
    assert e.attn_bank == 0 and e.attn_fusion == 0.4 and e.guidance_scale == 2.0
    assert "attn_bank 2 not applied: the compiled backend captured its graph without cached attention" in caplog.text
