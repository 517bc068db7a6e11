"""Backend choice and the device frame step the compiled and TensorRT backends capture."""

import importlib.util
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends import choose_backend, make_backend
from dreamcam.backends.compiled.step import (
    DeviceFrameStep,
    GraphedStep,
    StateSnapshot,
    TinyVaeCalls,
    check_capturable,
    check_frame,
    swap_modules,
)
from dreamcam.errors import ConfigError, DeviceError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(0)


def _engine(pipe, t_index=(0, 16, 32, 45), cfg="self", **kw):
    e = StreamEngine(pipe, list(t_index), 64, 64, cfg_type=cfg, device="cpu", dtype=torch.float32, **kw)
    e.prepare("a cat", guidance_scale=1.4, seed=3)
    return e


def test_auto_picks_eager_on_cpu_and_a_gpu_backend_on_cuda():
    assert choose_backend("auto", "cpu") == "eager"
    assert choose_backend("auto", "cuda") == ("tensorrt" if HAS_TRT else "compiled")
    assert choose_backend("compiled", "cpu") == "compiled"
    with pytest.raises(ConfigError, match="auto, eager, compiled, tensorrt"):
        choose_backend("fast", "cpu")


def test_auto_backend_on_cpu_is_eager_and_closes_twice(pipe):
    with make_backend("auto", _engine(pipe, (35,), "none")) as b:
        assert b.name == "eager"
        assert b.process(np.zeros((64, 64, 3), np.uint8)).shape == (64, 64, 3)
    b.close()


def test_auto_tries_tensorrt_then_compiled_then_eager_saying_why(pipe, monkeypatch, caplog):
    """A TensorRT that cannot run (too old, a failed build) falls back to compiled, not straight to
    eager; the knob options go to the backend auto picked first only."""
    import dreamcam.backends as backends

    monkeypatch.setattr(backends, "auto_candidates", lambda device_type: ["tensorrt", "compiled", "eager"])
    built = []
    real_build = backends._build

    def spy(name, engine, options):
        built.append((name, options))
        return real_build(name, engine, options)

    monkeypatch.setattr(backends, "_build", spy)
    with caplog.at_level("WARNING"):
        b = make_backend("auto", _engine(pipe, (35,), "none"), cuda_graph=False)
    assert b.name == "eager"
    assert built == [("tensorrt", {"cuda_graph": False}), ("compiled", {}), ("eager", {})]
    assert "backend tensorrt cannot run this set-up (the tensorrt backend needs a CUDA device" in caplog.text
    assert "; using compiled" in caplog.text and "backend compiled cannot run" in caplog.text
    assert "; using eager" in caplog.text
    with pytest.raises(DeviceError):  # asked for by name: the reason, not a silent fallback
        make_backend("compiled", _engine(pipe, (35,), "none"))


@pytest.mark.parametrize("name", ["compiled", "tensorrt"])
def test_gpu_backends_refuse_a_cpu_engine_with_one_clear_line(pipe, name):
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        make_backend(name, _engine(pipe, (35,), "none"))


def test_graphed_step_path_equals_eager_and_its_warm_up_leaves_no_trace(pipe):
    """The compiled and TensorRT backends' shared frame path, run on the CPU (no stream or graph)."""
    ref, eng = _engine(pipe), _engine(pipe)
    rng = np.random.default_rng(1)
    with swap_modules(eng, eng.unet, TinyVaeCalls(eng.vae, eng.vae.encoder, eng.vae.decoder)):
        run = GraphedStep(eng, warmup=3)
        assert run.graph is None and run.stream is None
        for i in range(6):
            frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            np.testing.assert_array_equal(run.process(frame), ref.img2img(frame))
            if i == 2:
                for e in (ref, eng):
                    e.set_strength(0.8)
                    e.set_seed(11)
        with pytest.raises(ConfigError, match="uint8 numpy frame of shape"):
            run.process(np.zeros((32, 32, 3), np.uint8))
        run.close()


def test_device_step_equals_eager_img2img_across_frames_and_live_changes(pipe):
    ref, eng = _engine(pipe), _engine(pipe)
    check_capturable(eng, "compiled")
    step = DeviceFrameStep(eng)
    snapshot = StateSnapshot(eng)
    rng = np.random.default_rng(0)
    with swap_modules(eng, eng.unet, TinyVaeCalls(eng.vae, eng.vae.encoder, eng.vae.decoder)):
        step()  # a warm-up frame, undone as the backends undo theirs
        snapshot.restore()
        for i in range(7):
            frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            step.frames_in.copy_(torch.from_numpy(check_frame(eng, frame)))
            step()
            np.testing.assert_array_equal(step.frames_out[0].numpy(), ref.img2img(frame))
            if i == 2:
                for e in (ref, eng):
                    e.set_strength(0.8)
                    e.set_prompt("a dog")
                    e.set_seed(11)
    assert eng.unet is pipe.unet and eng.vae is pipe.vae  # restored


def test_capture_preconditions_are_explained(pipe):
    with pytest.raises(ConfigError, match="use_denoising_batch"):
        check_capturable(_engine(pipe, (10, 30), use_denoising_batch=False, do_add_noise=False), "compiled")
    eng = _engine(pipe)
    eng.enable_similar_image_filter()
    with pytest.raises(ConfigError, match="similarity filter"):
        check_capturable(eng, "compiled")
    with pytest.raises(ConfigError, match=r"shape \(64, 64, 3\)"):
        check_frame(_engine(pipe), np.zeros((64, 32, 3), np.uint8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_compiled_backend_follows_eager_and_live_changes_need_no_recapture():
    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)

    def engine():
        e = StreamEngine(pipe, [20, 40], 64, 64, cfg_type="self", device="cuda", dtype=torch.float16)
        e.prepare("a cat", guidance_scale=1.4, seed=3)
        return e

    ref = engine()
    frames = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(5)]
    with make_backend("compiled", engine(), compile=False) as b:
        graph = b._run.graph
        for i, f in enumerate(frames):
            assert np.abs(b.process(f).astype(int) - ref.img2img(f).astype(int)).max() <= 2
            if i == 1:
                for e in (ref, b.engine):
                    e.set_strength(0.9)
        assert b._run.graph is graph


# The compiled backend where torch has no Triton (PyTorch's Windows wheels). No CUDA here: the
# engine is a stand-in carrying only a CUDA device (no tensor is touched before the check), and
# Triton's absence is made certain by hiding it from importlib.
@pytest.fixture
def no_triton(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))


def _cuda_engine():
    return SimpleNamespace(device=torch.device("cuda"))


@pytest.mark.skipif(HAS_TRT, reason="auto would pick tensorrt here")
def test_auto_on_cuda_without_triton_falls_back_to_eager_with_the_reason(no_triton, caplog):
    with caplog.at_level(logging.WARNING, logger="dreamcam.backends"):
        backend = make_backend("auto", _cuda_engine())
    assert backend.name == "eager"
    assert "needs Triton" in caplog.text and "using eager" in caplog.text


def test_compiled_by_name_without_triton_is_one_line(no_triton):
    with pytest.raises(DeviceError, match=r"needs Triton .* --backend eager or tensorrt"):
        make_backend("compiled", _cuda_engine())
