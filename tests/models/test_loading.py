"""load_pipeline on diffusers folders saved from the tiny pipeline: weights, engine output, VAE, LoRAs."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from dreamcam import StreamEngine, load_pipeline, tiny_pipeline
from dreamcam.errors import ConfigError, ModelLoadError


def engine_outputs(pipe, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    xs = [torch.rand((1, 3, 64, 64), generator=g) * 2 - 1 for _ in range(n)]
    engine = StreamEngine(pipe, t_index_list=[18, 36], width=64, height=64, cfg_type="self")
    engine.prepare("a watercolour fox", num_inference_steps=50, seed=7)
    return [engine.process(x) for x in xs]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def make_lora(unet_seed: int, folder, *, lora_seed: int = 5, **unet_kwargs) -> None:
    """A LoRA trained-shape for the tiny UNet (random, non-zero A and B), saved as diffusers does."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = tiny_pipeline(unet_seed).unet if not unet_kwargs else _other_unet(**unet_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(lora_seed)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers, safe_serialization=True)


def _other_unet(**kwargs):
    from diffusers import UNet2DConditionModel

    base = dict(sample_size=64, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8, norm_num_groups=8)
    return UNet2DConditionModel(**{**base, **kwargs})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    pipe = tiny_pipeline(3)
    pipe.save_pretrained(root / "tiny")
    make_lora(3, root / "lora")
    return pipe, root


def test_folder_round_trip_same_weights_and_output(saved):
    pipe, root = saved
    loaded = load_pipeline(str(root / "tiny"), device="cpu", dtype="float32", progress=False)
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, part).state_dict(), getattr(loaded, part).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert type(loaded.scheduler).__name__ == "LCMScheduler"
    assert loaded.safety_checker is None
    assert all(torch.equal(x, y) for x, y in zip(engine_outputs(pipe), engine_outputs(loaded)))
    other = engine_outputs(tiny_pipeline(4))
    assert max_diff(other, engine_outputs(loaded)) > 1e-3  # the comparison can tell pipelines apart


def test_dtype_and_logging(saved, caplog):
    _, root = saved
    with caplog.at_level(logging.INFO, logger="dreamcam.models.loading"):
        loaded = load_pipeline(str(root / "tiny"), dtype=torch.bfloat16, progress=False)
    assert loaded.unet.dtype == torch.bfloat16 and loaded.text_encoder.dtype == torch.bfloat16
    assert "loading diffusers pipeline from" in caplog.text and "model ready" in caplog.text


def test_scheduler_keep_and_unknown(saved):
    _, root = saved
    from diffusers import DDIMScheduler

    pipe = tiny_pipeline(3)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(root / "ddim")
    assert type(load_pipeline(str(root / "ddim"), progress=False).scheduler).__name__ == "LCMScheduler"
    assert type(load_pipeline(str(root / "ddim"), scheduler="keep", progress=False).scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ConfigError, match="scheduler must be one of lcm, keep, got 'euler'"):
        load_pipeline(str(root / "ddim"), scheduler="euler")


@pytest.mark.parametrize("kind", ["tiny", "kl"])
def test_vae_from_folder_replaces_the_pipeline_vae(saved, tmp_path, kind):
    from diffusers import AutoencoderKL, AutoencoderTiny

    pipe, root = saved
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        vae = (
            AutoencoderTiny(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4,
                            num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
            if kind == "tiny" else
            AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
        )
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_pipeline(str(root / "tiny"), vae=str(tmp_path / "vae"), progress=False)
    assert type(loaded.vae) is type(vae)
    sd = loaded.vae.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in vae.state_dict().items())
    assert max_diff(engine_outputs(pipe), engine_outputs(loaded)) > 1e-3


def test_lora_fused_changes_output_and_leaves_no_lora_layers(saved):
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipe, root = saved
    base = engine_outputs(pipe)
    fused = load_pipeline(str(root / "tiny"), loras=[(str(root / "lora"), 0.8)], progress=False)
    assert not any(isinstance(m, BaseTunerLayer) for m in fused.unet.modules())
    assert fused.get_list_adapters() == {}
    assert max_diff(base, engine_outputs(fused)) > 1e-3


def test_fused_lora_equals_the_unfused_adapter_at_the_same_scale(saved):
    from diffusers import StableDiffusionPipeline

    _, root = saved
    reference = StableDiffusionPipeline.from_pretrained(str(root / "tiny"), safety_checker=None)
    reference.load_lora_weights(str(root / "lora"), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.8])
    fused = load_pipeline(str(root / "tiny"), loras=[(str(root / "lora") + "/pytorch_lora_weights.safetensors", 0.8)],
                          progress=False)
    assert max_diff(engine_outputs(reference), engine_outputs(fused)) < 1e-4


def test_lora_at_scale_zero_is_the_base_model(saved):
    pipe, root = saved
    zero = load_pipeline(str(root / "tiny"), loras=[(str(root / "lora"), 0.0)], progress=False)
    assert max_diff(engine_outputs(pipe), engine_outputs(zero)) < 1e-6


def test_lcm_lora_and_lora_stack(saved, tmp_path):
    pipe, root = saved
    make_lora(3, tmp_path / "lcm", lora_seed=8)
    one = load_pipeline(str(root / "tiny"), lcm_lora=str(tmp_path / "lcm"), progress=False)
    both = load_pipeline(str(root / "tiny"), lcm_lora=str(tmp_path / "lcm"), loras=[(str(root / "lora"), 0.5)],
                         progress=False)
    base, a, b = engine_outputs(pipe), engine_outputs(one), engine_outputs(both)
    assert max_diff(base, a) > 1e-3 and max_diff(a, b) > 1e-3


def test_lora_for_another_unet_is_one_clear_error(saved, tmp_path):
    _, root = saved
    make_lora(0, tmp_path / "wide", block_out_channels=(48, 96))
    with pytest.raises(ModelLoadError, match=r"LoRA '.*wide' does not fit this model") as info:
        load_pipeline(str(root / "tiny"), loras=[(str(tmp_path / "wide"), 1.0)], progress=False)
    assert "\n" not in str(info.value) and info.value.__cause__ is not None


def test_lora_with_no_matching_weights_is_one_clear_error(saved, tmp_path):
    from safetensors.torch import save_file

    _, root = saved
    save_file({"unet.no_such_block.to_q.lora_A.weight": torch.zeros(4, 32),
               "unet.no_such_block.to_q.lora_B.weight": torch.zeros(32, 4)}, tmp_path / "stray.safetensors")
    with pytest.raises(ModelLoadError, match="stray.safetensors' does not fit this model"):
        load_pipeline(str(root / "tiny"), loras=[(str(tmp_path / "stray.safetensors"), 1.0)], progress=False)


def test_tiny_by_name():
    pipe = load_pipeline("tiny", progress=False)
    ref = tiny_pipeline(0)
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), ref.unet.state_dict().values()))


def test_progress_flag_restores_global_progress_bars(saved):
    from diffusers.utils import logging as diffusers_logging

    _, root = saved
    before = diffusers_logging.is_progress_bar_enabled()
    pipe = load_pipeline(str(root / "tiny"), progress=False)
    assert diffusers_logging.is_progress_bar_enabled() == before
    assert pipe._progress_bar_config == {"disable": True}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                    reason="LoRA fusing needs peft (pip install peft)")
def test_cuda_defaults_to_float16_and_fuses_on_the_gpu(saved):
    from peft.tuners.tuners_utils import BaseTunerLayer

    _, root = saved
    gpu = load_pipeline(str(root / "tiny"), loras=[(str(root / "lora"), 0.8)], progress=False)
    assert gpu.unet.device.type == "cuda" and gpu.unet.dtype == torch.float16
    assert gpu.vae.dtype == torch.float16 and gpu.text_encoder.dtype == torch.float16
    assert not any(isinstance(m, BaseTunerLayer) for m in gpu.unet.modules())
    cpu = load_pipeline(str(root / "tiny"), loras=[(str(root / "lora"), 0.8)], device="cpu", progress=False)
    out = [y.float().cpu() for y in engine_outputs(gpu)]
    assert all(torch.isfinite(y).all() for y in out)
    assert max_diff(out, engine_outputs(cpu)) < 5e-2  # float16 vs float32 on a random tiny model
