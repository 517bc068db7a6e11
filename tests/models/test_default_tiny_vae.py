"""A GPU backend without --vae gets the tiny VAE it needs (madebyollin/taesd, as StreamDiffusion
does by default); where that cannot be loaded the model's own VAE is kept with one warning, so
`auto` still runs (eager) instead of failing the load. Real saved pipelines, offline hub."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from dreamcam import tiny_pipeline

from dreamcam.cli import model_load as cli
from dreamcam.errors import ModelLoadError
from dreamcam.models.loading import load_pipeline


@pytest.fixture(scope="module")
def kl_model(tmp_path_factory):
    """A tiny pipeline saved with a full (KL) VAE, as real SD models come, and a TAESD-style folder."""
    root = tmp_path_factory.mktemp("models")
    pipe = tiny_pipeline(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        pipe.vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                 block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
        tiny = AutoencoderTiny(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4,
                               num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    pipe.save_pretrained(root / "kl")
    tiny.save_pretrained(root / "taesd")
    return root


def _args(model, vae=None):
    return argparse.Namespace(model=str(model), vae=vae, model_config=None, lcm_lora=None, lora=None)


def test_a_gpu_backend_gets_the_tiny_vae(kl_model, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_TINY_VAE", str(kl_model / "taesd"))  # the hub id, as a local folder here
    pipe = cli.load_model(_args(kl_model / "kl"), torch.device("cpu"), torch.float32, "compiled")
    assert isinstance(pipe.vae, AutoencoderTiny)
    assert "the compiled backend runs a tiny VAE; --vae to choose another" in capsys.readouterr().err


def test_eager_and_an_explicit_vae_are_left_as_asked(kl_model, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_TINY_VAE", str(kl_model / "taesd"))
    assert isinstance(cli.load_model(_args(kl_model / "kl"), torch.device("cpu"), torch.float32, "eager").vae,
                      AutoencoderKL)
    other = kl_model / "kl" / "vae"  # the model's own, asked for by name with a GPU backend
    pipe = cli.load_model(_args(kl_model / "kl", vae=str(other)), torch.device("cpu"), torch.float32, "tensorrt")
    assert isinstance(pipe.vae, AutoencoderKL)
    assert "runs a tiny VAE" not in capsys.readouterr().err


def test_a_tiny_vae_that_cannot_be_loaded_keeps_the_models_own(kl_model, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING):
        pipe = cli.load_model(_args(kl_model / "kl"), torch.device("cpu"), torch.float32, "compiled")
    assert isinstance(pipe.vae, AutoencoderKL)
    assert "madebyollin/taesd" in caplog.text and "keeping the model's own VAE" in caplog.text
    with pytest.raises(ModelLoadError, match="madebyollin/taesd"):  # asked for by name: the load fails
        load_pipeline(str(kl_model / "kl"), vae="madebyollin/taesd", progress=False)
