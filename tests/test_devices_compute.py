"""`dreamcam devices`' GPUs and backends: what can run the model here and what `--backend auto` runs.

This machine has no GPU, no Triton and no TensorRT, which is the first case, checked as it is. The
GPU cases stand a GPU in for torch.cuda (name, capability, memory; none exists here) and a
TensorRT module in for the package (tests/trt_standin.py; TensorRT cannot be installed here).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest
import torch
import trt_standin
from dreamcam.cli import devices
from test_devices import _run

HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_only_eager_runs_and_the_report_says_why(capsys):
    compute = devices.find_compute()
    assert compute["gpus"] == [] and compute["torch"] == torch.__version__
    assert "no CUDA GPU is visible to torch" in compute["no_gpu"]
    by_name = {b["name"]: b for b in compute["backends"]}
    assert by_name["eager"]["usable"]
    for name in ("compiled", "tensorrt"):
        assert not by_name[name]["usable"] and by_name[name]["why"] == "needs a CUDA GPU (none here)"
    assert compute["auto"] == "eager"
    assert _run() == 0
    text = capsys.readouterr().out
    assert f"GPUs (torch {torch.__version__}):\n  none: no CUDA GPU is visible to torch" in text
    assert "  compiled: unusable: needs a CUDA GPU (none here)\n" in text
    assert text.rstrip().endswith("--backend auto runs eager here")
    assert _run("--json") == 0
    assert json.loads(capsys.readouterr().out)["compute"]["auto"] == "eager"


@pytest.fixture
def one_gpu(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=85520809984)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)


def _with_tensorrt(monkeypatch, version):
    trt = trt_standin.make(version)
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # what find_spec reads for a loaded module
    monkeypatch.setitem(sys.modules, "tensorrt", trt)


def test_a_gpu_with_a_supported_tensorrt_runs_tensorrt_under_auto(one_gpu, monkeypatch, capsys):
    _with_tensorrt(monkeypatch, "11.4.0.106")
    compute = devices.find_compute()
    assert compute["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_gib": 79.6}]
    assert compute["no_gpu"] is None
    by_name = {b["name"]: b for b in compute["backends"]}
    assert by_name["tensorrt"] == {"name": "tensorrt", "usable": True, "why": None, "version": "11.4.0.106"}
    assert by_name["compiled"]["usable"] is HAS_TRITON
    assert compute["auto"] == "tensorrt"
    text = devices.format_report({"cameras": [], "screen": {"display": None, "monitors": [], "error": None},
                                  "virtualcam": [], "compute": compute})
    assert "  0: NVIDIA H100 80GB HBM3, compute capability 9.0, 79.6 GiB" in text
    assert "  tensorrt: usable (TensorRT 11.4.0.106)" in text and "--backend auto runs tensorrt here" in text


def test_an_unsupported_tensorrt_is_named_and_auto_runs_the_next_backend(one_gpu, monkeypatch):
    _with_tensorrt(monkeypatch, "8.6.1")
    compute = devices.find_compute()
    by_name = {b["name"]: b for b in compute["backends"]}
    assert not by_name["tensorrt"]["usable"]
    assert "TensorRT 8.6.1 is too old: the tensorrt backend needs 10 or 11" in by_name["tensorrt"]["why"]
    assert compute["auto"] == ("compiled" if HAS_TRITON else "eager")
    if not HAS_TRITON:
        assert "torch.compile needs Triton" in by_name["compiled"]["why"]


def test_tensorrt_that_is_missing_says_what_to_install(one_gpu):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    by_name = {b["name"]: b for b in devices.find_compute()["backends"]}
    assert by_name["tensorrt"]["why"] == "TensorRT is not installed: pip install 'dreamcam[tensorrt]'"
