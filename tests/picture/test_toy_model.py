"""The toy model ships in the package and loads through the same path as any diffusers folder."""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import pytest
import torch

from dreamcam import load_pipeline, toy_pipeline
from dreamcam.cli.models import check_model_flags
from dreamcam.errors import ConfigError
from dreamcam.models.pipelines import TOY_MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_load_pipeline_toy_is_the_folder_in_the_package(toy_pipe):
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert isinstance(toy_pipe.unet, UNet2DConditionModel) and isinstance(toy_pipe.vae, AutoencoderTiny)
    assert isinstance(toy_pipe.text_encoder, CLIPTextModel) and isinstance(toy_pipe.scheduler, LCMScheduler)
    assert toy_pipe.unet.dtype == torch.float32  # stored as float16, loaded in the asked-for dtype
    by_path = load_pipeline(str(TOY_MODEL_DIR), device="cpu", progress=False)
    for name, p in toy_pipe.unet.state_dict().items():
        assert torch.equal(p, by_path.unet.state_dict()[name]), name


def test_toy_pipeline_is_public_api():
    pipe = toy_pipeline(device="cpu")
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size


def test_the_weights_are_small_safetensors_that_pip_installs():
    files = [p for p in TOY_MODEL_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder"}
    assert all(p.suffix == ".safetensors" for p in weights)
    size = sum(p.stat().st_size for p in files)
    assert size <= 5_000_000, f"toy model is {size / 1e6:.1f} MB (at most 5 MB)"
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dreamcam"]
    pkg = ROOT / "plugin" / "dreamcam"
    for p in files:
        rel = p.relative_to(pkg).as_posix()
        if p.name == "training.json" or any(fnmatch.fnmatch(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns):
            continue
        pytest.fail(f"{rel} is not package data in pyproject.toml: `pip install .` would leave it out")
    assert (TOY_MODEL_DIR / "model_index.json").is_file()


@pytest.mark.parametrize("flag", ["vae", "lcm_lora", "model_config"])
def test_weights_cannot_be_loaded_into_the_toy_model(flag):
    args = argparse.Namespace(model="toy", vae=None, lcm_lora=None, lora=None, model_config=None)
    setattr(args, flag, "something")
    with pytest.raises(ConfigError, match="--model toy"):
        check_model_flags(args)
