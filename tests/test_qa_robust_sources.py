"""Sources under fault, through the real CLI: a bad input file is said before the slow model load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = str(Path(__file__).resolve().parents[1] / "plugin")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
           "--sink", "null", "--no-osc", "--frames", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda t: f"file:{t / 'no-such-clip.mp4'}", "video file not found"),
        (lambda t: f"file:{_write(t / 'empty.mp4', b'')}", "cannot read video"),
        (lambda t: f"image:{t / 'no-such.png'}", "image not found"),
        (lambda t: f"image:{_write(t / 'photo.png', b'not a picture at all')}", "cannot read image"),
    ],
)
def test_a_bad_input_file_is_one_line_before_the_model_loads(tmp_path, make, words):
    # before the fix the file was first opened after the model load and warm-up (a minute or
    # more with a real model and the compiled backend) to say that the path had a typo
    r = _run("--source", make(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "loading model" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("dreamcam: error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
