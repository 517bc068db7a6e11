"""Portability: the compiled backend where torch has no Triton (PyTorch's Windows wheels).

No CUDA here: the engine is a stand-in carrying only a CUDA device (no tensor is touched before
the check), and Triton's absence is made certain by hiding it from importlib.
"""

from __future__ import annotations

import importlib.util
import logging
from types import SimpleNamespace

import pytest
import torch
from dreamcam.backends import make_backend
from dreamcam.errors import DeviceError


@pytest.fixture
def no_triton(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))


def _cuda_engine():
    return SimpleNamespace(device=torch.device("cuda"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="auto would pick tensorrt here")
def test_auto_on_cuda_without_triton_falls_back_to_eager_with_the_reason(no_triton, caplog):
    with caplog.at_level(logging.WARNING, logger="dreamcam.backends"):
        backend = make_backend("auto", _cuda_engine())
    assert backend.name == "eager"
    assert "needs Triton" in caplog.text and "using eager" in caplog.text


def test_compiled_by_name_without_triton_is_one_line(no_triton):
    with pytest.raises(DeviceError, match=r"needs Triton .* --backend eager or tensorrt"):
        make_backend("compiled", _cuda_engine())
