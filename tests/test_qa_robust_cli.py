"""The CLI's own files under fault: --stats-json where it cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(__file__).resolve().parents[1] / "plugin")


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
    # before the fix: the whole run, then a FileNotFoundError traceback (exit 1) and no stats
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
