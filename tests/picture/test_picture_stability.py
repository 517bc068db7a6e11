"""The steady-picture bar, end to end: `dreamcam bench --flicker` (the real live loop, the flicker
meter, a lossless video clip of a still scene with camera noise, then a cut) on the trained toy
model at 128x128, strength 0.5. At stability 0.8 the meter reads at most 0.6x the flicker of
stability 0, the output follows its input as closely, and the cut shows within a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
ENV = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FPS = 30


def test_stability_halves_the_metered_flicker_of_a_still_noisy_camera(tmp_path):
    clip = tmp_path / "still_then_cut.mkv"
    subprocess.run([sys.executable, "-m", "dreamcam.bench.clips", str(clip), "--size", "128x128", "--lossless",
                    "--noise", "8", "--fps", str(FPS), "--still", "2", "--after", "1"],
                   check=True, env=ENV, timeout=120, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "dreamcam", "bench", "--model", "toy", "--width", "128", "--height", "128",
                        "--device", "cpu", "--strength", "0.5", "--flicker", "--source", f"file:{clip}",
                        "--sweep", "stability=0,0.8", "--frames", "90", "--warmup", "4", "--json"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    off, on = json.loads(r.stdout)["rows"]
    assert off["measured"] > 60 and on["measured"] > 60, (off, on)  # the meter kept up: a figure of many pairs
    assert on["flicker"] <= 0.6 * off["flicker"], (on["flicker"], off["flicker"])
    assert on["follow"] > 0.5 and on["follow"] >= off["follow"] - 0.01, (on["follow"], off["follow"])
    assert on["cut_frames"] is not None and on["cut_frames"] < FPS  # the new scene within a second
