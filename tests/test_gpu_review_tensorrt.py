"""Regression test from the review of the TensorRT backend (which cannot be installed here).

TensorRT itself and a CUDA device cannot exist on this machine, so the plan files, the TensorRT
engines and the CUDA warm-up are stand-ins; what is real is the backend's own bookkeeping: a
warm-up that fails must leave the engine running its own UNet and VAE, since `--backend auto`
then falls back to the eager backend on that same engine.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreamcam import StreamEngine
from dreamcam.backends.tensorrt import backend as trt_backend
from dreamcam.errors import DeviceError


class _PlanStandIn:
    """Stands in for a loaded TensorRT plan (TensorRT cannot be installed here)."""

    def __init__(self, plan_path: Path) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def allocate(self, input_shapes: dict, device: torch.device) -> None:
        pass


def _failing_warmup(engine, **kw):
    assert engine.unet is not engine.pipe.unet  # the TensorRT calls are in place while it warms up
    raise DeviceError("TensorRT execute_async_v3 failed; see the TensorRT messages above")


def test_a_failed_warmup_gives_the_engine_its_own_modules_back(tiny_pipe, monkeypatch):
    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    unet, vae = e.unet, e.vae
    monkeypatch.setattr(e, "device", torch.device("cuda"))  # the backend's own device check
    monkeypatch.setattr(trt_backend, "ensure_plans", lambda engine, folder=None: dict.fromkeys(
        ("unet", "vae_encoder", "vae_decoder"), Path("stand-in.plan")))
    monkeypatch.setattr(trt_backend, "TrtEngine", _PlanStandIn)
    monkeypatch.setattr(trt_backend, "GraphedStep", _failing_warmup)
    restored = None
    try:
        trt_backend.TensorRTBackend(e)
    except DeviceError as err:
        # where make_backend("auto") builds its eager fallback, with the error still held: the
        # half-built backend is not collected yet, so nothing but the backend itself undoes the swap
        assert "execute_async_v3" in str(err)
        restored = e.unet is unet and e.vae is vae
    assert restored is True
