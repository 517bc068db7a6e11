"""Bad model input: one clear ModelLoadError line, its cause chained, and no waiting on a dead hub."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants  # noqa: F401 - reads HF_HUB_OFFLINE once: import it before a test sets it
import pytest
from diffusers import StableDiffusionPipeline  # noqa: F401 - so timings below measure loading, not imports

from dreamcam import load_pipeline
from dreamcam.errors import ConfigError, ModelLoadError
from dreamcam.models.hub import hub_reachable

ROOT = Path(__file__).resolve().parents[2]


def one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_unknown_hub_id_offline_says_how_to_run_without_the_hub(offline):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_pipeline("dreamcam-tests/no-such-model", progress=False)
    assert time.monotonic() - start < 5
    text = one_line(info)
    assert "'dreamcam-tests/no-such-model' is not in the local Hugging Face cache" in text
    assert "--model ./my-model-folder" in text and "--model ./model.safetensors" in text and "--model tiny" in text
    assert info.value.__cause__ is not None


@pytest.fixture
def silent_hub():
    """A loopback 'hub' that accepts connections and never answers: a firewalled or dead endpoint."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_probe_gives_up_on_a_silent_hub(silent_hub):
    start = time.monotonic()
    assert hub_reachable(1.0, endpoint=silent_hub) is False
    assert time.monotonic() - start < 2.5


def test_probe_sees_a_hub_that_answers(monkeypatch):
    import http.server
    import threading

    from huggingface_hub import constants

    # the suite runs offline (conftest, CI); this test is about the probe itself
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        assert hub_reachable(2.0, endpoint=f"http://127.0.0.1:{server.server_port}") is True
    finally:
        thread.join(3)
        server.server_close()


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers (~10-20 s here); the load itself is bounded
def test_unknown_hub_id_fails_fast_when_the_hub_never_answers(silent_hub, tmp_path):
    # a fresh process, so huggingface_hub reads HF_ENDPOINT / HF_HOME as a user's shell would set them
    env = {**os.environ, "HF_ENDPOINT": silent_hub, "HF_HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "plugin")}
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import json, time\n"
        "from diffusers import StableDiffusionPipeline\n"
        "from dreamcam import load_pipeline\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    load_pipeline('dreamcam-tests/no-such-model', progress=False)\n"
        "except Exception as e:\n"
        "    print(json.dumps([type(e).__name__, str(e), time.monotonic() - t]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    kind, message, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    assert kind == "ModelLoadError" and "not in the local Hugging Face cache" in message
    assert seconds < 8, f"took {seconds:.1f} s"  # probe timeout 3 s, then the cache lookup


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(tmp_path / "nowhere"), progress=False)
    assert f"model path '{tmp_path / 'nowhere'}' does not exist" in one_line(info)
    with pytest.raises(ModelLoadError, match=r"'\./missing\.safetensors' does not exist"):
        load_pipeline("./missing.safetensors", progress=False)


def test_folder_without_model_index_points_at_the_checkpoint_inside(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(tmp_path), progress=False)
    assert "is not a diffusers pipeline folder (no model_index.json)" in one_line(info)
    (tmp_path / "dreamshaper.safetensors").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="it holds 'dreamshaper.safetensors': pass that file instead"):
        load_pipeline(str(tmp_path), progress=False)


def test_folder_of_an_sdxl_pipeline_missing_a_part(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }))
    with pytest.raises(ModelLoadError, match="holds a StableDiffusionXLPipeline that lacks tokenizer_2"):
        load_pipeline(str(tmp_path), progress=False)


def test_folder_with_broken_component(tmp_path):
    from dreamcam import tiny_pipeline

    tiny_pipeline(1).save_pretrained(tmp_path)
    weights = next((tmp_path / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(tmp_path), progress=False)
    assert f"could not load the diffusers pipeline in {tmp_path}" in one_line(info)


def test_unsupported_extension(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(f), progress=False)
    assert "unsupported model file 'model.onnx': expected a .safetensors or .ckpt checkpoint" in one_line(info)


def test_corrupt_ckpt(tmp_path, offline):
    f = tmp_path / "model.ckpt"
    f.write_bytes(b"PK\x03\x04 definitely not a torch archive")
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(f), config=str(tmp_path), progress=False)
    assert "model.ckpt" in one_line(info)


def test_missing_lora_and_vae_paths(tmp_path):
    with pytest.raises(ModelLoadError, match=r"LoRA path '\./styles/ink\.safetensors' does not exist"):
        load_pipeline("tiny", loras=[("./styles/ink.safetensors", 1.0)], progress=False)
    with pytest.raises(ModelLoadError, match=r"VAE path '\./taesd' does not exist"):
        load_pipeline("tiny", vae="./taesd", progress=False)


def test_unknown_lora_and_vae_hub_ids_offline(offline):
    with pytest.raises(ModelLoadError, match="LoRA 'latent-consistency/nope' is not in the local Hugging Face cache"):
        load_pipeline("tiny", lcm_lora="latent-consistency/nope", progress=False)
    with pytest.raises(ModelLoadError, match=r"could not load VAE 'madebyollin/nope' \(not in the local cache"):
        load_pipeline("tiny", vae="madebyollin/nope", progress=False)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="dtype must be one of"):
        load_pipeline("tiny", dtype="int8")
    with pytest.raises(ConfigError, match="LoRA scale for 'x' must be a number, got 'strong'"):
        load_pipeline("tiny", loras=[("x", "strong")])
    with pytest.raises(ConfigError, match=r"each LoRA must be a \(path, scale\) pair"):
        load_pipeline("tiny", loras=[("x",)])
    with pytest.raises(ConfigError, match="model must be 'tiny', 'toy', a hub id"):
        load_pipeline("  ")


def test_missing_lora_and_vae_paths_are_said_before_the_base_model_loads(monkeypatch, tmp_path):
    from dreamcam.models import loading

    def base_loaded(*a, **k):
        raise AssertionError("the base model was loaded before the VAE/LoRA paths were checked")

    monkeypatch.setattr(loading, "_load_base", base_loaded)
    with pytest.raises(ModelLoadError, match=r"VAE path '\./taesd' does not exist"):
        load_pipeline("some/model", vae="./taesd", progress=False)
    with pytest.raises(ModelLoadError, match=r"LoRA path '.*ink\.safetensors' does not exist"):
        load_pipeline("some/model", loras=[(str(tmp_path / "ink.safetensors"), 0.8)], progress=False)
    with pytest.raises(ModelLoadError, match=r"LoRA path '\./lcm' does not exist"):
        load_pipeline("some/model", lcm_lora="./lcm", progress=False)


def test_lora_flag_scale_must_be_a_number(tmp_path):
    from dreamcam.cli.models import parse_lora

    assert parse_lora("ink.safetensors:0.8") == ("ink.safetensors", 0.8)
    assert parse_lora("ink.safetensors") == ("ink.safetensors", 1.0)
    assert parse_lora("user/ink-lora") == ("user/ink-lora", 1.0)
    assert parse_lora("C:\\loras\\ink.safetensors") == ("C:\\loras\\ink.safetensors", 1.0)
    with pytest.raises(ConfigError, match=r"--lora ink.safetensors:strong: the scale after ':' must be a number"):
        parse_lora("ink.safetensors:strong")


def test_a_corrupt_or_truncated_ckpt_is_named_as_such(tmp_path):
    import pickle

    import torch

    from dreamcam.models.loading import check_checkpoint_file

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64, 64)}}, good)
    check_checkpoint_file(good)  # a real torch.save archive passes
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(pickle.dumps({"state_dict": {}}, protocol=2))
    check_checkpoint_file(legacy)  # a pre-1.6 pickle passes
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a download that stopped half-way
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"<html>404</html>")
    for f in (cut, junk):
        with pytest.raises(ModelLoadError, match=rf"{f.name} is not a readable PyTorch checkpoint .*download it again"):
            check_checkpoint_file(f)
