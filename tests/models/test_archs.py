"""The benchmark architectures have the real models' shapes (checked on the meta device: no memory)."""

import pytest
import torch

from dreamcam.models.archs import ARCHS, build_text_encoder, build_unet, check_arch, count_params
from dreamcam.errors import ConfigError


@pytest.mark.parametrize("name,unet_m,text_m", [("sd-turbo", 865.9, 340.4), ("sd15", 859.5, 123.1)])
def test_parameter_counts_match_the_published_models(name, unet_m, text_m):
    with torch.device("meta"):
        unet = build_unet(name)
        text = build_text_encoder(name, bos_token_id=512, eos_token_id=513)
    assert round(count_params(unet) / 1e6, 1) == unet_m
    assert round(count_params(text) / 1e6, 1) == text_m


def test_cross_attention_widths_match_the_text_encoders():
    for name in ARCHS:
        with torch.device("meta"):
            unet = build_unet(name)
            text = build_text_encoder(name, bos_token_id=512, eos_token_id=513)
        assert unet.config.cross_attention_dim == text.config.hidden_size


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="sd-turbo, sd15"):
        check_arch("sdxl")
