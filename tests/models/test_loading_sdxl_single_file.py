"""A single-file SDXL checkpoint (original layout: UNet with its added-conditioning embedding, the
CLIP and OpenCLIP text encoders) written from the tiny SDXL, loaded back through diffusers' real
`from_single_file` path: `load_pipeline` tells SDXL from SD by the file's keys, offline with
`config=` a configs-only folder, the tiny VAE passed separately (TAESDXL has no original layout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

from dreamcam import StreamEngine, load_pipeline, tiny_pipeline
from dreamcam.models.loading import model_family
from ldm_layout import sdxl_text_encoders_to_ldm, unet_to_ldm


def _configs_only(folder: Path, dest: Path) -> Path:
    for f in folder.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            (dest / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.relative_to(folder))
    return dest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl_single")
    pipe = tiny_pipeline(3, arch="sdxl")
    pipe.save_pretrained(root / "full")
    pipe.vae.save_pretrained(root / "taesdxl")
    sd = {**unet_to_ldm(pipe.unet), **sdxl_text_encoders_to_ldm(pipe.text_encoder, pipe.text_encoder_2)}
    save_file({k: v.contiguous() for k, v in sd.items()}, root / "sdxl.safetensors")
    return pipe, root, _configs_only(root / "full", root / "config")


def test_the_file_is_recognised_as_sdxl(checkpoint):
    _, root, _ = checkpoint
    assert model_family(str(root / "sdxl.safetensors")) == "sdxl"


def test_a_single_sdxl_file_loads_with_every_weight_and_the_same_frames(checkpoint):
    pipe, root, config = checkpoint
    loaded = load_pipeline(str(root / "sdxl.safetensors"), config=str(config), vae=str(root / "taesdxl"),
                           device="cpu", progress=False)
    assert isinstance(loaded, StableDiffusionXLPipeline)
    for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
        want, got = getattr(pipe, part).state_dict(), getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        assert all(torch.equal(want[k], got[k]) for k in want), part
    outs = []
    for p in (pipe, loaded):
        e = StreamEngine(p, [18, 36], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32)
        e.prepare("a watercolour fox", seed=7)
        outs.append(e.process(torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)))
    assert torch.equal(*outs)
