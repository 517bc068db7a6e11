"""SDXL models through the real loading path: the tiny SDXL saved as a diffusers folder and into a
Hugging Face cache under the hub id stabilityai/sdxl-turbo (no hub here: offline, the cache is
what a download would have left), loaded back with `load_pipeline` and the CLI's model loader,
which picks TAESDXL as the tiny VAE of an SDXL model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionXLPipeline

from dreamcam import StreamEngine, load_pipeline, tiny_pipeline
from dreamcam.errors import ConfigError, ModelLoadError
from dreamcam.models.loading import model_family

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny SDXL (seed 1) as a diffusers folder, a TAESDXL-style tiny VAE folder, and the tiny SD."""
    root = tmp_path_factory.mktemp("sdxl")
    tiny_pipeline(1, arch="sdxl").save_pretrained(root / "sdxl")
    tiny_pipeline(0).save_pretrained(root / "sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        AutoencoderTiny(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4,
                        num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4).save_pretrained(root / "taesdxl")
    return root


def test_a_saved_sdxl_folder_loads_as_sdxl_with_its_own_weights(saved):
    pipe = load_pipeline(str(saved / "sdxl"), device="cpu", progress=False)
    assert isinstance(pipe, StableDiffusionXLPipeline) and isinstance(pipe.scheduler, LCMScheduler)
    want = tiny_pipeline(1, arch="sdxl")
    for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
        got_sd, want_sd = getattr(pipe, part).state_dict(), getattr(want, part).state_dict()
        assert all(torch.equal(got_sd[k], want_sd[k]) for k in want_sd), part
    e = StreamEngine(pipe, [30], 64, 64, device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    assert e.is_sdxl and e.added_cond_kwargs["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]


def test_the_family_is_read_from_the_files_without_loading(saved):
    assert model_family(str(saved / "sdxl")) == "sdxl" and model_family(str(saved / "sd")) == "sd"
    assert model_family("tiny-sdxl") == "sdxl" and model_family("tiny") == "sd"
    assert model_family(str(saved / "nothing-here")) is None
    assert model_family("stabilityai/sdxl-turbo") is None  # neither cached here nor reachable


def test_an_sdxl_folder_takes_a_tiny_vae(saved):
    pipe = load_pipeline(str(saved / "sdxl"), vae=str(saved / "taesdxl"), device="cpu", progress=False)
    assert isinstance(pipe.vae, AutoencoderTiny) and pipe.vae.config.encoder_block_out_channels[0] == 16


def test_tiny_sdxl_by_name_and_bad_arch_are_clear(saved):
    assert isinstance(load_pipeline("tiny-sdxl", device="cpu", progress=False), StableDiffusionXLPipeline)
    with pytest.raises(ConfigError, match="tiny_pipeline arch must be one of sd, sdxl"):
        tiny_pipeline(0, arch="sd3")


def test_a_refiner_style_folder_is_one_line(saved, tmp_path):
    """A refiner has no first text encoder: not a stream model, said before anything loads."""
    folder = tmp_path / "refiner"
    folder.mkdir()
    spec = json.loads((saved / "sdxl" / "model_index.json").read_text())
    spec.pop("text_encoder")
    spec.pop("tokenizer")
    (folder / "model_index.json").write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match=r"lacks text_encoder, tokenizer; .*an SDXL refiner"):
        load_pipeline(str(folder), device="cpu", progress=False)


def _into_hf_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay a saved folder out as huggingface_hub's cache does after a download of repo_id."""
    import shutil

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_the_sdxl_turbo_hub_id_loads_from_the_cache_with_taesdxl(saved, tmp_path):
    """`stabilityai/sdxl-turbo`, as cached by a download, resolves to the SDXL path; the compiled
    backend's default tiny VAE for it is madebyollin/taesdxl, also from the cache. A new process,
    so huggingface_hub reads this cache folder from its environment."""
    cache = tmp_path / "hub"
    _into_hf_cache(cache, "stabilityai/sdxl-turbo", saved / "sdxl")
    _into_hf_cache(cache, "madebyollin/taesdxl", saved / "taesdxl")
    code = (
        "import argparse, torch\n"
        "from dreamcam.cli.model_load import default_tiny_vae, load_model\n"
        "from dreamcam.models.loading import model_family\n"
        "assert model_family('stabilityai/sdxl-turbo') == 'sdxl'\n"
        "assert default_tiny_vae('stabilityai/sdxl-turbo') == 'madebyollin/taesdxl'\n"
        "args = argparse.Namespace(model='stabilityai/sdxl-turbo', vae=None, model_config=None, lcm_lora=None, lora=None)\n"
        "pipe = load_model(args, torch.device('cpu'), torch.float32, 'compiled')\n"
        "print(type(pipe).__name__, type(pipe.vae).__name__, pipe.vae.config.encoder_block_out_channels[0])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["StableDiffusionXLPipeline", "AutoencoderTiny", "16"]
    assert "VAE: madebyollin/taesdxl (the compiled backend runs a tiny VAE" in r.stderr
