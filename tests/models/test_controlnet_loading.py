"""Loading a ControlNet (models/controlnet.py): a diffusers folder, a single .safetensors file of
diffusers weights, "tiny"; what does not fit the loaded model or cannot be found is one line."""

from __future__ import annotations

import pytest
import torch
from dreamcam.errors import ModelLoadError
from dreamcam.models.controlnet import load_controlnet, tiny_controlnet


def test_tiny_matches_the_unet_and_its_residuals_follow_the_control_image(tiny_pipe):
    net = tiny_controlnet(tiny_pipe.unet)
    assert net.config.cross_attention_dim == tiny_pipe.unet.config.cross_attention_dim
    sample = torch.randn(1, 4, 8, 8)
    emb = torch.randn(1, 77, 32)
    with torch.no_grad():
        a = net(sample, torch.tensor([500]), encoder_hidden_states=emb, controlnet_cond=torch.zeros(1, 3, 64, 64),
                return_dict=False)
        b = net(sample, torch.tensor([500]), encoder_hidden_states=emb, controlnet_cond=torch.ones(1, 3, 64, 64),
                return_dict=False)
    assert all(d.abs().max() > 0 for d in a[0]) and a[1].abs().max() > 0  # zero convolutions re-initialised
    assert (a[1] - b[1]).abs().max() > 1e-3 * a[1].abs().max()  # the control image steers
    assert torch.equal(tiny_controlnet(tiny_pipe.unet).controlnet_mid_block.weight, net.controlnet_mid_block.weight)


def test_a_saved_folder_loads_with_the_same_weights(tiny_pipe, tmp_path):
    net = tiny_controlnet(tiny_pipe.unet)
    net.save_pretrained(tmp_path / "cn")
    loaded = load_controlnet(str(tmp_path / "cn"), tiny_pipe.unet)
    assert torch.equal(loaded.controlnet_mid_block.weight, net.controlnet_mid_block.weight)


def test_a_controlnet_for_another_base_model_is_one_line(tiny_pipe, tmp_path):
    from diffusers import ControlNetModel

    other = ControlNetModel(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=48,
                            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                            attention_head_dim=8, norm_num_groups=8, conditioning_embedding_out_channels=(16, 16, 32, 32))
    other.save_pretrained(tmp_path / "sdxl-ish")
    with pytest.raises(ModelLoadError) as e:
        load_controlnet(str(tmp_path / "sdxl-ish"), tiny_pipe.unet)
    line = str(e.value)
    assert "\n" not in line and "cross_attention_dim is 48 but the UNet's is 32" in line and "another base model" in line


@pytest.mark.parametrize("source,said", [
    ("./no/such/folder", "does not exist"),
    ("lllyasviel/sd-controlnet-canny", "not in the local cache and the hub is not reachable"),
])
def test_what_cannot_be_found_is_one_line(tiny_pipe, source, said):
    with pytest.raises(ModelLoadError, match=said):
        load_controlnet(source, tiny_pipe.unet)


def test_a_folder_without_config_and_a_wrong_file_are_one_line(tiny_pipe, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_controlnet(str(tmp_path / "empty"), tiny_pipe.unet)
    (tmp_path / "cn.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="unsupported ControlNet file"):
        load_controlnet(str(tmp_path / "cn.txt"), tiny_pipe.unet)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ModelLoadError, match="not a readable .safetensors"):
        load_controlnet(str(tmp_path / "cut.safetensors"), tiny_pipe.unet)
