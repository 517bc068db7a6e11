"""`dreamcam run --stats-json`: a file that cannot be written is one line said before the run (not
after it), `~` means the home folder, and the counts are what the outputs really wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from dreamcam.cli.run_options import check_output_file
from dreamcam.errors import ConfigError

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
           "--source", "testpattern", "--sink", "null", "--no-osc", "--frames", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("dreamcam: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_stats_json_in_a_missing_folder_is_said_before_the_run(tmp_path):
    # said at start, not as a FileNotFoundError traceback (exit 1, no stats) after the whole run
    r = _run("--stats-json", str(tmp_path / "no" / "such" / "stats.json"))
    assert "does not exist" in _one_error(r) and "loading model" not in r.stderr


def test_stats_json_under_a_literal_tilde_is_written_in_the_home_folder(tmp_path):
    # cmd.exe, PowerShell and --stats-json=~/x leave ~ to the program; it was read as a folder named "~"
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1", "HOME": str(home), "USERPROFILE": str(home)}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
           "--source", "testpattern", "--sink", "null", "--no-osc", "--frames", "2", "--stats-json=~/stats.json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (home / "stats.json").is_file() and not (tmp_path / "~").exists()


def test_stats_json_that_cannot_be_written_at_the_end_is_one_line(tmp_path):
    folder = tmp_path / "stats.json"
    folder.mkdir()  # a folder where the file should go: open() would fail when the run ends
    r = _run("--stats-json", str(folder))
    assert "cannot write --stats-json" in _one_error(r)
    assert "loading model" not in r.stderr  # said at start, not after the run (README walkthrough)


def test_stats_json_that_is_a_folder_is_said_before_the_model_loads(tmp_path):
    # said at start, not as "cannot write --stats-json" after the whole run (possibly hours)
    r = _run("--stats-json", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--stats-json" in r.stderr and "loading model" not in r.stderr


def test_stats_json_check_leaves_no_file_behind(tmp_path):
    target = tmp_path / "stats.json"
    check_output_file(str(target), "--stats-json")
    assert not target.exists()
    with pytest.raises(ConfigError, match="folder .* does not exist"):
        check_output_file(str(tmp_path / "no" / "stats.json"), "--stats-json")


# A recorder that is behind when the loop ends writes out its buffer while closing: the summary
# must count those frames, so it is read after the outputs closed.
def test_stats_json_counts_the_frames_a_recorder_writes_while_closing(tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
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
