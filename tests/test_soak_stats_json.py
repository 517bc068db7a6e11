"""Soak: --stats-json at the end of a run counts what the outputs really wrote. A recorder that
is behind when the loop ends writes out its buffer while closing; the summary must count those
frames (it was read before the outputs closed, so it said fewer frames than the file has)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def test_stats_json_counts_the_frames_a_recorder_writes_while_closing(tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--source", "testpattern",
         "--fps", "120", "--bypass", "--frames", "120", "--width", "64", "--height", "64",
         # a large recording with a slower encoder than the bypassed loop: frames wait in its buffer
         "--sink", f"file:{out}?size=1280x720", "--sink", "null",
         "--stats-json", str(stats), "--no-osc"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(stats.read_text())
    cap = cv2.VideoCapture(str(out))
    in_file = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert s["frames"] == 120
    assert s["sinks"]["0:file"] == in_file == 120, (s["sinks"], in_file)
    assert 0 <= s["sinks"]["1:null"] <= 120 and s["dropped_output"] >= 0
