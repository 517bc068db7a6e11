"""`dreamcam bench --controlnet tiny` times the engine with a ControlNet and prints fps and latency."""

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")


def test_bench_with_a_tiny_controlnet_prints_fps_and_latency():
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "bench", "--controlnet", "tiny", "--control", "softedge", "--device", "cpu",
           "--width", "64", "--height", "64", "--frames", "3", "--warmup", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["controlnet"] == ["tiny (softedge) x1"]
    assert out["dreamcam"]["fps"] > 0 and out["dreamcam"]["p50_ms"] > 0


def test_bench_refuses_the_peer_with_a_controlnet():
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dreamcam", "bench", "--controlnet", "tiny", "--peer"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "runs no ControlNet" in r.stderr
