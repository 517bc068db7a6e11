"""The compiled backend's speed knobs, applied to a CPU engine (`StepModules`) and run through
the backends' shared frame path (`GraphedStep`): results must equal eager, and closing must
leave the shared pipeline as it was. Compiling on the CPU takes minutes (Inductor's C++ kernels),
so the compiled variants run only with DREAMCAM_SLOW_TESTS=1; the rest runs always."""

import os

import numpy as np
import pytest
import torch

from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.compiled.backend import (
    BLOCK_CLASSES,
    INDUCTOR_PRESETS,
    CompiledBackend,
    StepModules,
    inductor_options,
)
from dreamcam.backends.compiled.step import GraphedStep, swap_modules
from dreamcam.errors import ConfigError, DeviceError

SLOW = pytest.mark.skipif(os.environ.get("DREAMCAM_SLOW_TESTS") != "1",
                          reason="set DREAMCAM_SLOW_TESTS=1 (CPU torch.compile: 1-3 minutes per variant)")


def _engine(pipe, frame_buffer_size=1):
    e = StreamEngine(pipe, [0, 16, 32, 45], 64, 64, cfg_type="self", frame_buffer_size=frame_buffer_size,
                     device="cpu", dtype=torch.float32)
    e.prepare("a cat", guidance_scale=1.4, seed=3)
    return e


def _frames(n, f=1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (64, 64, 3) if f == 1 else (f, 64, 64, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def _run_against_eager(knobs, frame_buffer_size=1, frames=5):
    """Max |difference| of the knobbed frame path from eager img2img, uint8 levels; a separate
    pipeline with the same weights is the reference (fuse_qkv and "blocks" change the modules)."""
    ref, eng = _engine(tiny_pipeline(0), frame_buffer_size), _engine(tiny_pipeline(0), frame_buffer_size)
    worst = 0
    with StepModules(eng, **knobs) as mods, swap_modules(eng, mods.unet, mods.vae):
        with mods.compiling():
            run = GraphedStep(eng, warmup=2)
        for i, frame in enumerate(_frames(frames, frame_buffer_size)):
            out, want = run.process(frame), ref.img2img(frame)
            assert out.shape == want.shape == frame.shape
            worst = max(worst, int(np.abs(out.astype(int) - want.astype(int)).max()))
            if i == 1:  # a live change must reach the compiled step without a recompile
                for e in (ref, eng):
                    e.set_strength(0.8)
        run.close()
    return worst, mods


def test_inductor_options_merge_the_mode_and_the_preset():
    assert inductor_options() == {}
    assert inductor_options(inductor="tuned") == {
        "conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False}
    merged = inductor_options("max-autotune-no-cudagraphs", "freeze")
    assert merged["max_autotune"] is True and merged["freezing"] is True
    import torch._inductor.config as cfg

    for preset in INDUCTOR_PRESETS.values():  # every name exists in this torch's Inductor config
        for key in preset:
            assert hasattr(cfg, key), key


@pytest.mark.parametrize("kw,match", [
    ({"inductor": "fast"}, "--inductor must be one of default, tuned, freeze, tuned-freeze; got 'fast'"),
    ({"compile_mode": "max-autotune"}, "--compile-mode must be one of default, max-autotune-no-cudagraphs"),
    ({"compile_scope": "layers"}, "--compile-scope must be one of whole, blocks"),
    ({"compile": False, "inductor": "tuned"}, "drop --no-compile"),
    ({"compile": False, "compile_scope": "blocks"}, "drop --no-compile"),
])
def test_bad_knobs_are_one_clear_line(tiny_pipe, kw, match):
    with pytest.raises(ConfigError, match=match):
        StepModules(_engine(tiny_pipe), **kw)


def test_fused_qkv_equals_eager_and_closing_restores_the_unet():
    pipe = tiny_pipeline(0)
    x = torch.randn(4, 4, 8, 8)
    e = _engine(pipe)
    before = pipe.unet(x, e._unet_t, encoder_hidden_states=e._embeds, return_dict=False)[0]
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    with torch.no_grad(), StepModules(e, compile=False, fuse_qkv=True) as mods:
        assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
        fused = mods.unet(x, e._unet_t, encoder_hidden_states=e._embeds, return_dict=False)[0]
        torch.testing.assert_close(fused, before, rtol=1e-5, atol=1e-5)
    mods.close()
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
    assert not any(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in pipe.unet.modules())
    again = pipe.unet(x, e._unet_t, encoder_hidden_states=e._embeds, return_dict=False)[0]
    torch.testing.assert_close(again, before, rtol=0, atol=0)


def test_fused_qkv_frame_path_follows_eager_with_two_frames_per_call():
    worst, _ = _run_against_eager({"compile": False, "fuse_qkv": True}, frame_buffer_size=2)
    assert worst <= 1


def test_blocks_scope_wraps_each_repeated_block_and_close_puts_them_back():
    pipe = tiny_pipeline(0)
    originals = {id(m) for m in pipe.unet.modules()} | {id(m) for m in pipe.vae.modules()}
    want = [m for root in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder) for m in root.modules()
            if type(m).__name__ in BLOCK_CLASSES]
    assert {type(m).__name__ for m in want} == set(BLOCK_CLASSES)  # the tiny model has every kind
    mods = StepModules(_engine(pipe), compile_scope="blocks")
    assert mods.compiled_blocks == len(want)
    wrapped = [m for m in pipe.unet.modules() if type(m).__name__ == "OptimizedModule"]
    assert wrapped and all(type(w._orig_mod).__name__ in BLOCK_CLASSES for w in wrapped)
    assert mods.unet is pipe.unet  # the blocks are compiled in place; the glue stays eager
    mods.close()
    mods.close()
    assert {id(m) for m in pipe.unet.modules()} | {id(m) for m in pipe.vae.modules()} == originals


def test_compiled_backend_still_refuses_a_cpu_engine_before_touching_the_modules(tiny_pipe):
    e = _engine(tiny_pipe)
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        CompiledBackend(e, fuse_qkv=True, compile_scope="blocks")
    assert not any(type(m).__name__ == "OptimizedModule" for m in tiny_pipe.unet.modules())
    assert not any(hasattr(m, "to_qkv") for m in tiny_pipe.unet.modules())


@SLOW
@pytest.mark.parametrize("knobs,frame_buffer_size", [
    ({"compile_scope": "whole"}, 1),
    ({"compile_scope": "blocks"}, 1),
    ({"compile_scope": "blocks", "fuse_qkv": True, "inductor": "tuned-freeze"}, 2),
    ({"inductor": "tuned"}, 1),
    ({"inductor": "freeze"}, 1),
    ({"fp8_linear": True}, 1),
])
def test_compiled_knobs_follow_eager(tmp_path, monkeypatch, knobs, frame_buffer_size):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # cold: nothing from earlier runs
    torch._dynamo.reset()
    worst, mods = _run_against_eager(knobs, frame_buffer_size)
    assert worst <= 2, f"{knobs}: {worst} uint8 levels from eager"
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] > 0  # it really compiled


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("knobs", [{"fuse_qkv": True, "compile_scope": "blocks"}, {"inductor": "tuned-freeze"}])
def test_compiled_backend_with_knobs_follows_eager_on_a_gpu(knobs):
    from dreamcam.backends import make_backend

    def engine(pipe):
        e = StreamEngine(pipe, [20, 40], 64, 64, cfg_type="self", frame_buffer_size=2, device="cuda",
                         dtype=torch.float16)
        e.prepare("a cat", guidance_scale=1.4, seed=3)
        return e

    ref = engine(tiny_pipeline(0, device="cuda", dtype=torch.float16))
    with make_backend("compiled", engine(tiny_pipeline(0, device="cuda", dtype=torch.float16)), **knobs) as b:
        assert b.knobs["compile_scope"] == knobs.get("compile_scope", "whole") and b._run.graph is not None
        for frame in _frames(4, 2):
            assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
