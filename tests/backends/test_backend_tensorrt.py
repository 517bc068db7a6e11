"""TensorRT plan naming and profiles (plain Python), and the real build where TensorRT exists."""

import importlib.util
from pathlib import Path

import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.backends.tensorrt.backend import Profile, default_profiles, model_hash, plan_name
from dreamcam.errors import DeviceError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def engine():
    e = StreamEngine(tiny_pipeline(0), [0, 16, 32, 45], 512, 288, cfg_type="initialize", device="cpu",
                     dtype=torch.float32)
    e.prepare("a cat")
    return e


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_says_what_to_install():
    from dreamcam.backends.tensorrt.backend import import_tensorrt
    from dreamcam.errors import DeviceError

    with pytest.raises(DeviceError, match=r"TensorRT 10 or 11: pip install 'dreamcam\[tensorrt\]'"):
        import_tensorrt()


def test_profiles_cover_the_engine_batch_and_size(engine):
    p = default_profiles(engine)
    assert p["unet"].batch == (1, 5, 8)  # 4 steps + 1 unconditional row (initialize)
    assert p["unet"].height == (256, 288, 1024) and p["unet"].width == (256, 512, 1024)
    assert p["unet"].shapes("sample", 4, True)[1] == (5, 4, 36, 64)
    assert p["vae_encoder"].shapes("images", 3, False)[0] == (1, 3, 256, 256)


def test_plan_name_encodes_model_shapes_precision_version_and_gpu(engine):
    h = model_hash(engine.unet)
    assert len(h) == 12 and h == model_hash(engine.unet)
    assert h != model_hash(tiny_pipeline(1).unet)
    name = plan_name("unet", h, Profile((1, 2, 8), (256, 512, 1024), (256, 512, 1024)), "10.7.0", "NVIDIA H200")
    assert name == f"unet_{h}_b1-8_h256-1024_w256-1024_fp16_trt10.7.0_NVIDIA-H200.plan"


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason="needs the tensorrt package (10 or 11) and a CUDA GPU; neither can be installed here")
def test_tensorrt_backend_follows_eager(tmp_path):
    import numpy as np

    from dreamcam.backends import make_backend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)

    def eng():
        e = StreamEngine(pipe, [35], 256, 256, cfg_type="none", device="cuda", dtype=torch.float16)
        e.prepare("a cat")
        return e

    ref = eng()
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with make_backend("tensorrt", eng(), folder=str(tmp_path)) as b:
        assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason="needs the tensorrt package (10 or 11) and a CUDA GPU; neither can be installed here")
def test_tensorrt_backend_follows_eager_on_sdxl(tmp_path):
    """The SDXL UNet engine takes text_embeds and time_ids bound to the engine's buffers; another
    engine size inside the profile reuses the plans (its time ids are inputs)."""
    import numpy as np

    from dreamcam.backends import make_backend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16, arch="sdxl")
    for w, h in ((512, 512), (384, 256)):
        def eng():
            e = StreamEngine(pipe, [20, 40], w, h, cfg_type="self", device="cuda", dtype=torch.float16)
            e.prepare("a cat", guidance_scale=1.3)
            return e

        ref = eng()
        frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        with make_backend("tensorrt", eng(), folder=str(tmp_path)) as b:
            for _ in range(3):
                assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
    assert len(list(tmp_path.glob("unet_*.plan"))) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason="needs the tensorrt package (10 or 11) and a CUDA GPU; neither can be installed here")
def test_tensorrt_backend_follows_eager_with_an_sdxl_controlnet(tmp_path):
    """The SDXL ControlNet engine and the SDXL unet_residuals engine both take text_embeds and
    time_ids (the engine's added_cond_kwargs) bound to their buffers; frames follow eager's."""
    import numpy as np

    from dreamcam.backends import make_backend
    from dreamcam.engine.controlnet import ControlStack, ControlUnit
    from dreamcam.engine.preprocessors import Canny
    from dreamcam.models.controlnet import tiny_controlnet

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16, arch="sdxl")
    net = tiny_controlnet(pipe.unet)  # on the UNet's device and dtype

    def eng():
        e = StreamEngine(pipe, [20, 40], 256, 256, cfg_type="self", device="cuda", dtype=torch.float16,
                         control=ControlStack([ControlUnit(net, {"canny": Canny()})]))
        e.prepare("a cat", guidance_scale=1.3)
        return e

    ref = eng()
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with make_backend("tensorrt", eng(), folder=str(tmp_path)) as b:
        for _ in range(3):
            assert np.abs(b.process(frame).astype(int) - ref.img2img(frame).astype(int)).max() <= 3
    assert len(list(tmp_path.glob("controlnet_0_*.plan"))) == 1


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_engines_without_tensorrt_is_one_clear_error():
    import argparse

    from dreamcam.cli import build_engines as tensorrt
    from dreamcam.errors import DeviceError

    p = argparse.ArgumentParser()
    tensorrt.add_arguments(p)
    with pytest.raises(DeviceError, match="needs TensorRT 10"):
        tensorrt.run(p.parse_args(["--model", "tiny", "--width", "256", "--height", "256"]))


def test_build_engines_takes_the_tiny_vae_dreamcam_run_loads():
    """The plans are cached per model hash, VAE included: build-engines loads the same TAESD that
    `dreamcam run` loads for the tensorrt backend without --vae, so run finds what was built."""
    import argparse

    from dreamcam.cli import build_engines as tensorrt
    from dreamcam.errors import ConfigError
    from dreamcam.cli.models import DEFAULT_TINY_VAE

    p = argparse.ArgumentParser()
    tensorrt.add_arguments(p)
    assert p.parse_args([]).vae is None and DEFAULT_TINY_VAE in p.format_help()
    with pytest.raises(ConfigError, match="--vae is for --model ID|PATH"):
        tensorrt.run(p.parse_args(["--model", "tiny", "--vae", "madebyollin/taesd"]))


# A warm-up that fails must leave the engine running its own UNet and VAE, since `--backend auto`
# then falls back to the eager backend on that same engine. TensorRT and a CUDA device cannot exist
# here, so the plan files, the TensorRT engines and the CUDA warm-up are stand-ins; what is real is
# the backend's own bookkeeping.
class _PlanStandIn:
    """Stands in for a loaded TensorRT plan (TensorRT cannot be installed here)."""

    def __init__(self, plan_path: Path) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def allocate(self, input_shapes: dict, device: torch.device) -> None:
        pass


def _failing_warmup(engine, **kw):
    assert engine.unet is not engine.pipe.unet  # the TensorRT calls are in place while it warms up
    raise DeviceError("TensorRT execute_async_v3 failed; see the TensorRT messages above")


def test_a_failed_warmup_gives_the_engine_its_own_modules_back(tiny_pipe, monkeypatch):
    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    unet, vae = e.unet, e.vae
    monkeypatch.setattr(e, "device", torch.device("cuda"))  # the backend's own device check
    monkeypatch.setattr(trt_backend, "ensure_plans", lambda engine, folder=None: dict.fromkeys(
        ("unet", "vae_encoder", "vae_decoder"), Path("stand-in.plan")))
    monkeypatch.setattr(trt_backend, "TrtEngine", _PlanStandIn)
    monkeypatch.setattr(trt_backend, "GraphedStep", _failing_warmup)
    restored = None
    try:
        trt_backend.TensorRTBackend(e)
    except DeviceError as err:
        # where make_backend("auto") builds its eager fallback, with the error still held: the
        # half-built backend is not collected yet, so nothing but the backend itself undoes the swap
        assert "execute_async_v3" in str(err)
        restored = e.unet is unet and e.vae is vae
    assert restored is True
