"""Single-file checkpoints: the tiny pipeline written in the original LDM/SD key layout, loaded back.

The converter (tests/ldm_layout.py) is the inverse of diffusers' single-file conversion, written for the tiny
architecture (any number of levels, any layers_per_block), so `load_pipeline(file, config=...)`
runs diffusers' real `from_single_file` path on a file laid out like those users download.
The config folder holds configs only (no weights), so every weight must come from the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dreamcam import StreamEngine, load_pipeline, tiny_pipeline
from dreamcam.errors import ModelLoadError
from ldm_layout import text_encoder_to_ldm, unet_to_ldm, vae_kl_to_ldm


def tiny_kl_pipeline(seed: int):
    """The tiny pipeline with a small AutoencoderKL, the VAE kind real checkpoints carry."""
    from diffusers import AutoencoderKL

    pipe = tiny_pipeline(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)
        pipe.vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            sample_size=64,
        )
    return pipe


def config_only_copy(folder: Path, dest: Path) -> Path:
    """What diffusers fetches from the hub as configs: json/txt files, no weights."""
    for f in folder.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            (dest / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.relative_to(folder))
    assert not list(dest.rglob("*.safetensors"))
    return dest


def engine_outputs(pipe, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    engine = StreamEngine(pipe, t_index_list=[18, 36], width=64, height=64, cfg_type="self")
    engine.prepare("a watercolour fox", num_inference_steps=50, seed=7)
    return [engine.process(f) for f in frames]


def frames(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.rand((1, 3, 64, 64), generator=g) * 2 - 1 for _ in range(n)]


def assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() <= sb.keys() or sb.keys() <= sa.keys()
    common = sa.keys() & sb.keys()
    assert len(common) > 10
    for k in common:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def kl_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    pipe = tiny_kl_pipeline(4)
    pipe.save_pretrained(root / "full")
    config = config_only_copy(root / "full", root / "config")
    sd = {**unet_to_ldm(pipe.unet), **vae_kl_to_ldm(pipe.vae), **text_encoder_to_ldm(pipe.text_encoder)}
    save_file({k: v.contiguous() for k, v in sd.items()}, root / "model.safetensors")
    torch.save({"state_dict": sd}, root / "model.ckpt")
    return pipe, root, config


@pytest.mark.parametrize("name", ["model.safetensors", "model.ckpt"])
def test_single_file_round_trip_matches_weights_and_output(kl_checkpoint, name):
    pipe, root, config = kl_checkpoint
    loaded = load_pipeline(str(root / name), config=str(config), device="cpu", progress=False)
    for part in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, part), getattr(loaded, part))
    assert type(loaded.vae).__name__ == "AutoencoderKL"
    xs = frames()
    for a, b in zip(engine_outputs(pipe, xs), engine_outputs(loaded, xs)):
        assert torch.equal(a, b)


def test_single_file_with_tiny_vae_passed_separately(tmp_path):
    # the stock tiny pipeline's VAE is an AutoencoderTiny, which has no original-layout form:
    # its checkpoint holds UNet + text encoder, and the TAESD comes from vae=
    pipe = tiny_pipeline(6)
    pipe.save_pretrained(tmp_path / "full")
    config = config_only_copy(tmp_path / "full", tmp_path / "config")
    pipe.vae.save_pretrained(tmp_path / "taesd")
    sd = {**unet_to_ldm(pipe.unet), **text_encoder_to_ldm(pipe.text_encoder)}
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
    loaded = load_pipeline(str(tmp_path / "m.safetensors"), config=str(config), vae=str(tmp_path / "taesd"),
                           progress=False)
    for part in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, part), getattr(loaded, part))
    xs = frames(2)
    for a, b in zip(engine_outputs(pipe, xs), engine_outputs(loaded, xs)):
        assert torch.equal(a, b)


def test_converter_is_not_an_identity(kl_checkpoint):
    # guards the round trip above from passing through a diffusers-layout file by accident
    _, root, _ = kl_checkpoint
    from safetensors import safe_open

    with safe_open(str(root / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("model.diffusion_model.input_blocks.") and k.endswith(".1.proj_in.weight") for k in keys)
    assert "first_stage_model.decoder.up.0.block.1.nin_shortcut.weight" not in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert not any(k.startswith(("unet.", "down_blocks.")) for k in keys)


def test_truncated_safetensors_is_one_clear_error(kl_checkpoint, tmp_path):
    _, root, config = kl_checkpoint
    data = (root / "model.safetensors").read_bytes()
    bad = tmp_path / "half.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"half\.safetensors is not a readable \.safetensors file .*download it again"):
        load_pipeline(str(bad), config=str(config), progress=False)


def test_garbage_safetensors_is_one_clear_error(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(ModelLoadError, match="junk.safetensors is not a readable .safetensors file") as info:
        load_pipeline(str(bad), progress=False)
    assert "\n" not in str(info.value) and info.value.__cause__ is not None


def test_checkpoint_of_another_architecture_fails_cleanly(kl_checkpoint, tmp_path):
    # a checkpoint whose UNet does not match the config's shapes
    _, root, config = kl_checkpoint
    other = tiny_kl_pipeline(4)
    from diffusers import UNet2DConditionModel

    other.unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=8,
    )
    sd = {**unet_to_ldm(other.unet), **vae_kl_to_ldm(other.vae), **text_encoder_to_ldm(other.text_encoder)}
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "other.safetensors")
    with pytest.raises(ModelLoadError, match="could not load checkpoint other.safetensors") as info:
        load_pipeline(str(tmp_path / "other.safetensors"), config=str(config), progress=False)
    assert "\n" not in str(info.value)


def test_single_file_without_config_offline_says_what_to_pass(kl_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, root, _ = kl_checkpoint
    with pytest.raises(ModelLoadError, match="--model-config FOLDER"):
        load_pipeline(str(root / "model.safetensors"), progress=False)
