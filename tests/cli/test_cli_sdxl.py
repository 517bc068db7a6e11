"""`--model tiny-sdxl` from the command line, as a user runs it: a real process, a real video file."""

import os
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]


def dreamcam(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_run_tiny_sdxl_testpattern_to_file(tmp_path):
    out = tmp_path / "out.mp4"
    r = dreamcam("run", "--model", "tiny-sdxl", "--source", "testpattern", "--sink", f"file:{out}", "--frames", "10",
                 "--device", "cpu", "--width", "128", "--height", "96", "--osc-port", "0")
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 96)
    ok, first = cap.read()
    assert ok and first.std() > 1.0
    assert "done: 10 frames" in r.stderr


def test_bench_tiny_sdxl_prints_fps_and_latency():
    r = dreamcam("bench", "--model", "tiny-sdxl", "--device", "cpu", "--frames", "3", "--warmup", "1",
                 "--width", "64", "--height", "64")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "dreamcam[eager]" in ln)
    assert " fps " in line and " ms" in line
    assert r.stdout.startswith("tiny-sdxl 64x64")


def test_weights_flags_on_tiny_sdxl_are_refused_in_one_line():
    r = dreamcam("run", "--model", "tiny-sdxl", "--vae", "madebyollin/taesdxl", "--source", "testpattern",
                 "--sink", "null", "--frames", "1", timeout=120)
    assert r.returncode == 2
    assert "--vae cannot be used with --model tiny-sdxl (random weights, nothing is loaded)" in r.stderr


def test_bench_peer_on_sdxl_says_the_peer_cannot_run_it():
    r = dreamcam("bench", "--model", "tiny-sdxl", "--device", "cpu", "--frames", "1", "--warmup", "0",
                 "--width", "64", "--height", "64", "--peer")
    assert r.returncode == 2, r.stderr
    assert "--peer cannot run an SDXL model: StreamDiffusion 0.1.1 never passes SDXL's added conditioning" in r.stderr
