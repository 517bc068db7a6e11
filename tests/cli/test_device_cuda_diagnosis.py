"""`--device cuda` and `dreamcam devices` give one diagnosis of a missing GPU. No GPU can exist
on the test machine, so torch.version.cuda and torch.cuda.is_available are monkeypatched: the
only thing mocked is what torch finds."""

from __future__ import annotations

import pytest
import torch

from dreamcam.cli.devices import find_compute
from dreamcam.cli.live import resolve_device
from dreamcam.errors import ConfigError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)

    def build(cuda: str | None) -> None:
        monkeypatch.setattr(torch.version, "cuda", cuda)

    return build


@pytest.mark.skipif(__import__("sys").platform == "darwin", reason="macOS has no CUDA build of torch to diagnose")
@pytest.mark.parametrize(("cuda", "says", "never"), [
    ("12.8", "torch has CUDA 12.8 but finds no GPU; check the NVIDIA driver with nvidia-smi", "install a CUDA build"),
    (None, "this torch is a CPU-only build; for an NVIDIA GPU install a CUDA build", "nvidia-smi"),
])
def test_device_cuda_and_devices_say_the_same_reason(no_gpu, cuda, says, never):
    no_gpu(cuda)
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda")
    message = str(e.value)
    assert message.startswith("--device cuda: no CUDA GPU is visible to torch: ") and "\n" not in message
    assert says in message and never not in message
    assert message.endswith("; or use --device cpu (slow)")
    devices_says = find_compute()["no_gpu"]
    assert says in devices_says and never not in devices_says


def test_device_auto_on_a_machine_without_gpu_is_the_cpu(no_gpu):
    no_gpu("12.8")
    assert resolve_device("auto") == (torch.device("cpu"), torch.float32)
