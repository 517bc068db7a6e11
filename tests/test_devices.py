"""`dreamcam devices` here: no cameras, the Xvfb monitor when DISPLAY is set, and pyvirtualcam
backends with their reasons (the real v4l2loopback backend fails here: no loopback device).

A second backend is registered through pyvirtualcam's own seam (`register_backend`) to show
the usable case; it keeps frames in memory because no video device exists here.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest
from dreamcam.cli import devices
from dreamcam.sources.webcam import present_cameras
from test_sources_xvfb import SCREEN_H, SCREEN_W, Xvfb


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
