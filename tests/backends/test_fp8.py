"""--fp8-linear (backends/compiled/fp8.py): FP8 transformer projections with static, calibrated scales.

PyTorch runs `torch._scaled_mm` on the CPU too, so the layer swap, the calibration, the
numerics, the saturation and the frame path are tested here; the GPU test (compute capability
8.9+, run by the sweep's gputests row) checks the compiled, graph-captured path on a real card."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.compiled.backend import StepModules
from dreamcam.backends.compiled.fp8 import (
    FP8_MAX,
    MARGIN,
    Fp8Linear,
    Fp8Linears,
    check_fp8_device,
)
from dreamcam.backends.compiled.step import GraphedStep, swap_modules
from dreamcam.errors import ConfigError, DeviceError
from torch import nn


def _engine(pipe, steps=(0, 16, 32, 45), device="cpu", dtype=torch.float32):
    e = StreamEngine(pipe, list(steps), 64, 64, cfg_type="self", device=device, dtype=dtype)
    e.prepare("a cat", guidance_scale=1.4, seed=3)
    return e


def _sd2_style(pipe):
    """The tiny pipeline with SD 2.x's linear proj_in/proj_out (sd-turbo's layout: the proj_in
    input is a permuted view), same weights for the same seed."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        unet = UNet2DConditionModel.from_config(pipe.unet.config, use_linear_projection=True)
    pipe.unet = unet.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
    return pipe


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def test_an_fp8_linear_observes_then_follows_the_fp32_layer_closely():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    layer = Fp8Linear(lin)
    x = torch.randn(2, 50, 64)
    torch.testing.assert_close(layer(x), lin(x), rtol=0, atol=0)  # observing: the original layer
    assert float(layer.amax) == pytest.approx(float(x.abs().max()))
    layer.freeze()
    assert layer.w_fp8.dtype == torch.float8_e4m3fn and layer.w_fp8.shape == (32, 64)
    assert float(layer.in_scale) == pytest.approx(float(x.abs().max()) * MARGIN / FP8_MAX)
    y, want = layer(x), lin(x)
    assert y.shape == want.shape == (2, 50, 32)
    rel = float((y - want).detach().norm() / want.detach().norm())
    assert 0 < rel < 0.08, rel  # really quantized, and within e4m3's precision


def test_inputs_beyond_the_calibrated_range_saturate_instead_of_overflowing():
    torch.manual_seed(1)
    lin = nn.Linear(32, 16, bias=False)
    layer = Fp8Linear(lin)
    layer(torch.randn(8, 32) * 0.1)
    layer.freeze()
    y = layer(torch.randn(8, 32) * 1000)  # 10^4 times the calibrated range
    assert torch.isfinite(y).all()
    bound = 32 * FP8_MAX * float(layer.in_scale) * float(lin.weight.detach().abs().max())
    assert float(y.detach().abs().max()) <= bound * 1.01


def test_the_swap_takes_the_image_projections_only_and_close_puts_the_originals_back():
    pipe = tiny_pipeline(0)
    before = {n: m for n, m in pipe.unet.named_modules() if isinstance(m, nn.Linear)}
    fp8 = Fp8Linears(pipe.unet)
    now = {n for n, m in pipe.unet.named_modules() if isinstance(m, Fp8Linear)}
    assert now and len(now) == len(fp8.layers)
    assert all(".transformer_blocks." in n for n in now)
    kinds = {n.split(".transformer_blocks.0.")[1] for n in now}
    assert kinds == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
                     "ff.net.0.proj", "ff.net.2"}  # not attn2.to_k/to_v: their input is the prompt
    fp8.close()
    assert {n: m for n, m in pipe.unet.named_modules() if isinstance(m, nn.Linear)} == before
    assert not any(isinstance(m, Fp8Linear) for m in pipe.unet.modules())


def test_calibration_leaves_no_trace_in_the_engine_state():
    pipe = tiny_pipeline(0)
    e = _engine(pipe)
    saved = [t.clone() for t in (e._x_batch, e.stock_noise, e._init_noise)]
    with StepModules(e, compile=False, fp8_linear=True) as mods:
        layers = mods._fp8.layers
        assert all(not layer.observing and float(layer.amax) > 0 for layer in layers)
        for live, was in zip((e._x_batch, e.stock_noise, e._init_noise), saved):
            torch.testing.assert_close(live, was, rtol=0, atol=0)
    assert not any(isinstance(m, Fp8Linear) for m in pipe.unet.modules())


@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_the_fp8_frame_path_follows_eager_within_a_few_levels(layout):
    make = (lambda: tiny_pipeline(0)) if layout == "sd1" else (lambda: _sd2_style(tiny_pipeline(0)))
    ref, eng = _engine(make()), _engine(make())
    if layout == "sd2":
        assert isinstance(eng.pipe.unet.down_blocks[2].attentions[0].proj_in, nn.Linear)
    diffs = []
    with StepModules(eng, compile=False, fp8_linear=True) as mods, swap_modules(eng, mods.unet, mods.vae):
        run = GraphedStep(eng, warmup=2)
        for i, frame in enumerate(_frames(6)):
            out, want = run.process(frame), ref.img2img(frame)
            diffs.append(np.abs(out.astype(int) - want.astype(int)))
            if i == 2:  # live changes still reach the step
                for e in (ref, eng):
                    e.set_strength(0.8)
                    e.set_prompt("a dog")
        run.close()
    worst, mean = max(int(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs]))
    assert 0 < worst <= 8 and mean < 1, (worst, mean)  # FP8 really ran, and stayed close


def test_fp8_with_fused_projections_quantizes_the_fused_self_attention_layer():
    pipe = tiny_pipeline(0)
    with StepModules(_engine(pipe), compile=False, fuse_qkv=True, fp8_linear=True):
        names = {n.rsplit(".", 1)[-1] for n, m in pipe.unet.named_modules() if isinstance(m, Fp8Linear)}
        assert "to_qkv" in names and "to_kv" not in names
    assert not any(isinstance(m, Fp8Linear) or hasattr(m, "to_qkv") for m in pipe.unet.modules())


def test_a_unet_without_transformer_projections_is_refused_in_one_line():
    unet = nn.Sequential(nn.Conv2d(4, 16, 3), nn.Linear(16, 16))  # a Linear, but outside any transformer block
    with pytest.raises(ConfigError, match=r"^--fp8-linear found no linear layer in the UNet's transformer blocks "
                                          r"\(this model has none to convert\): drop --fp8-linear$"):
        Fp8Linears(unet)
    assert type(unet[1]) is nn.Linear  # nothing swapped


def test_a_failed_fp8_swap_leaves_the_fused_unet_as_it_was(monkeypatch):
    import dreamcam.backends.compiled.backend as compiled

    def refuse(unet):
        raise ConfigError("no layers")

    pipe = tiny_pipeline(0)
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    monkeypatch.setattr(compiled, "Fp8Linears", refuse)
    with pytest.raises(ConfigError, match="no layers"):
        StepModules(_engine(pipe), compile=False, fuse_qkv=True, fp8_linear=True)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors  # unfused again
    assert not any(hasattr(m, "to_qkv") for m in pipe.unet.modules())


def test_a_gpu_without_fp8_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3090")
    with pytest.raises(DeviceError, match=r"^--fp8-linear needs an Ada or Hopper GPU \(compute capability 8.9\+\); "
                                          r"NVIDIA GeForce RTX 3090 is 8.6: drop --fp8-linear$"):
        check_fp8_device(torch.device("cuda", 0))
    check_fp8_device(torch.device("cpu"))  # the CPU runs it (tests)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs a CUDA GPU with FP8 (compute capability 8.9+; none on this machine)")
@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_compiled_fp8_backend_follows_fp16_on_a_gpu(layout):
    """sd2: the linear proj_in whose permuted input CUDA's _scaled_mm refused (2026-11-26 H100)."""
    from dreamcam.backends import make_backend

    def engine():
        pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)
        if layout == "sd2":
            pipe = _sd2_style(pipe)
        return _engine(pipe, steps=(20, 40), device="cuda", dtype=torch.float16)

    ref = engine()
    with make_backend("compiled", engine(), fp8_linear=True) as b:
        assert b.knobs["fp8_linear"] and b._run.graph is not None
        for frame in _frames(4):
            d = np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int))
            assert d.max() <= 32 and d.mean() < 4, (d.max(), d.mean())


def test_a_permuted_input_reaches_the_fp8_matmul_row_major(monkeypatch):
    """SD2's linear proj_in gets (1, H*W, C) as a permuted view of (1, C, H, W): reshaped, it is
    column-major, which CUDA's _scaled_mm refuses ("self must be row_major"; the CPU's takes it)."""
    layer = Fp8Linear(nn.Linear(64, 32))
    x = torch.randn(1, 64, 50).transpose(1, 2)  # (1, 50, 64), channels-first memory
    assert x.reshape(-1, 64).stride() == (1, 50)
    with torch.no_grad():
        want = layer(x)
        layer.freeze()
        real = torch._scaled_mm
        seen = []

        def row_major_only(a, b, **kw):
            seen.append(a.stride())
            assert a.is_contiguous(), f"mat1 strides {a.stride()}"
            return real(a, b, **kw)

        monkeypatch.setattr(torch, "_scaled_mm", row_major_only)
        got = layer(x)
    assert seen == [(64, 1)]
    assert float((got - want).norm() / want.norm()) < 0.08
