"""Every flag of `dreamcam run` is checked before torch loads: a value out of its range, a bad
size, source or sink spec or an unwritable file is refused at once, with one line and exit 2.

The `dreamcam` command runs in a subprocess of this tree (python -m dreamcam) under
`python -X importtime`, which lists every module the process imported: torch must not be there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dreamcam(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "dreamcam", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def _imported(stderr: str) -> set[str]:
    """Module names from -X importtime's lines ('import time: self | cumulative | name')."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.parametrize("argv,message", [
    (["--strength", "2"], "strength must be between 0 and 1, got 2.0"),
    (["--width", "100"], "width must be a positive multiple of 8"),
    (["--source", "file:/nonexistent/clip.mp4"], "video file not found: /nonexistent/clip.mp4"),
    (["--source", "webcam:/dev/video97"], "camera /dev/video97 does not exist"),
    (["--sink", "udp://nohost"], "udp sink takes udp://HOST:PORT"),
    (["--output-size", "3x3"], "--output-size must be even numbers"),
    (["--camera-size", "big"], "--camera-size takes WIDTHxHEIGHT"),
    (["--t-index-list", "30,x"], "--t-index-list takes whole numbers"),
    (["--similarity-filter", "2"], "--similarity-filter takes a cosine similarity"),
    (["--presets", "/nonexistent/presets.toml"], "cannot read presets file /nonexistent/presets.toml"),
    (["--stats-json", "/nonexistent/stats.json"], "folder /nonexistent does not exist"),
    (["--vae", "madebyollin/taesd"], "--vae cannot be used with --model tiny"),
    (["--device", "cpu", "--backend", "compiled"], "the compiled backend needs a CUDA device"),
    (["--device", "cpu", "--fuse-qkv"], "--fuse-qkv tunes the compiled backend"),
    (["--backend", "fastest"], "--backend must be one of auto, eager, compiled, tensorrt"),
    (["--engines-dir", __file__], "is a file; give a folder"),
])
def test_a_bad_flag_is_refused_in_one_line_without_torch(argv, message):
    r = _dreamcam("run", "--model", "tiny", "--source", "testpattern", "--sink", "null", "--no-osc", *argv)
    said = _said(r.stderr)
    assert r.returncode == 2, r.stderr
    assert len(said) == 1 and said[0].startswith("dreamcam: error: ") and message in said[0], said
    imported = _imported(r.stderr)
    assert "dreamcam.cli.run_options" in imported  # the checks ran, and the probe sees dreamcam's imports
    assert "torch" not in imported and "diffusers" not in imported


def test_help_version_and_the_probe_itself():
    r = _dreamcam("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("dreamcam ")
    assert "torch" not in _imported(r.stderr)
    # the probe can fail: the benchmark module does import torch
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import dreamcam.bench.engine"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert "torch" in _imported(r.stderr)
