"""`dreamcam devices` here: no cameras, the Xvfb monitor when DISPLAY is set, pyvirtualcam
backends with their reasons (the real v4l2loopback backend fails here: no loopback device), and
the GPUs and backends that can run the model.

A second backend is registered through pyvirtualcam's own seam (`register_backend`) to show
the usable case; it keeps frames in memory because no video device exists here.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dreamcam.cli import devices
from dreamcam.sources.webcam import present_cameras

import trt_standin
from xvfb_screen import SCREEN_H, SCREEN_W, Xvfb


class MemoryCamera:
    """A pyvirtualcam backend that keeps the frames it is sent (no device exists here)."""

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.size, self.frames = (width, height), []

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "memory-0"

    def native_fourcc(self):
        return None


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    devices.add_arguments(parser)
    return devices.run(parser.parse_args(list(argv)))


@pytest.fixture
def memory_backend():
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

    pyvirtualcam.register_backend("memory", MemoryCamera)
    yield "memory"
    BACKENDS.pop("memory", None)


def test_cameras_lists_only_what_opens():
    cams = devices.find_cameras()
    for c in cams:  # on a machine with cameras, each one listed is a node that is there
        assert c["device"] in present_cameras() and c["source"] == f"webcam:{c['device']}"
    if sys.platform.startswith("linux") and not present_cameras():
        assert cams == []


def test_virtualcam_backends_report_each_reason(memory_backend):
    found = {b["name"]: b for b in devices.find_virtualcam_backends()}
    assert found["memory"]["usable"] and found["memory"]["device"] == "memory-0" and found["memory"]["error"] is None
    if sys.platform.startswith("linux"):
        v4l2 = found["v4l2loopback"]
        if not v4l2["usable"]:  # no loopback device on this machine
            assert "modprobe v4l2loopback" in v4l2["error"] and "\n" not in v4l2["error"]
            assert "v4l2loopback" in v4l2["hint"]


def test_text_listing_without_display(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert _run() == 0
    out = capsys.readouterr().out
    assert out.startswith("cameras:\n")
    assert "\nmonitors:\n  no display: screen capture needs an X server/desktop session" in out
    assert "virtual cameras (pyvirtualcam backends):" in out
    if sys.platform.startswith("linux") and not present_cameras():
        assert "  none that open (no /dev/video* nodes)" in out
        assert "v4l2loopback: unusable: 'v4l2loopback' backend: No v4l2 loopback device found" in out
        assert "to get one: install v4l2loopback" in out


def test_listing_with_xvfb_display(monkeypatch, capsys, memory_backend):
    with Xvfb() as x:
        monkeypatch.setenv("DISPLAY", x.display)
        assert _run("--json") == 0
        report = json.loads(capsys.readouterr().out)
        assert report["screen"]["display"] == x.display and report["screen"]["error"] is None
        mons = report["screen"]["monitors"]
        assert [m["index"] for m in mons] == [0, 1]
        assert {k: mons[1][k] for k in ("left", "top", "width", "height")} == {"left": 0, "top": 0, "width": SCREEN_W, "height": SCREEN_H}
        assert mons[1]["source"] == "screen:1"
        assert {b["name"] for b in report["virtualcam"]} >= {"memory"}
        assert isinstance(report["cameras"], list)
        _run()
        text = capsys.readouterr().out
        assert f"monitors (DISPLAY={x.display}):" in text
        assert f"  1: {SCREEN_W}x{SCREEN_H} at 0,0   --source screen:1" in text
        assert "  memory: usable (memory-0)   --sink virtualcam:memory" in text
        assert "to get one:" not in text  # one backend works


# GPUs and backends: what can run the model here and what `--backend auto` runs. This machine
# has no GPU, no Triton and no TensorRT, which is the first case, checked as it is. The GPU cases
# stand a GPU in for torch.cuda (name, capability, memory; none exists here) and a TensorRT module
# in for the package (tests/trt_standin.py; TensorRT cannot be installed here).
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
