"""End to end: dreamcam streams a video file to a real OBS over UDP and records it at the same time."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from obs_harness import OBS_MARKS, ObsStudio, free_port

pytestmark = OBS_MARKS
ROOT = Path(__file__).resolve().parents[2]


def write_clip(path: Path, n: int = 60, size=(320, 240)) -> None:
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = (40, 180, 220)
        cv2.circle(img, (40 + 3 * i, h // 2), 30, (255, 255, 255), -1)
        out.write(img)
    out.release()


def test_file_to_udp_and_recorder_shows_in_obs(tmp_path):
    clip, rec = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    write_clip(clip)
    port = free_port(socket.SOCK_DGRAM)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--source", f"file:{clip}",
           "--sink", f"udp://127.0.0.1:{port}", "--sink", f"file:{rec}", "--width", "128", "--height", "128", "--osc-port", "0"]
    with ObsStudio() as studio:
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                if "live:" in line:
                    break
            shot = studio.media_source_screenshot(port, timeout_s=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # what OBS shows is one of the frames dreamcam recorded (both come from the same engine output)
    cap = cv2.VideoCapture(str(rec))
    recorded = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        recorded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(recorded) >= 2
    shot = cv2.resize(shot, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    diffs = [np.abs(shot - f.astype(np.float32)).mean() for f in recorded]
    best = min(diffs)
    assert best < 12, f"OBS's picture differs from every recorded frame (best mean abs diff {best:.1f})"
    assert np.abs(shot - shot.mean()).mean() > 3, "OBS shows a flat picture"
