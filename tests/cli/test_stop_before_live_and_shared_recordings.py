"""Ctrl-C before the live loop says where it stopped and leaves no empty recording; two file
sinks on one file are refused before anything opens. Real `dreamcam run` processes with the
tiny model and the test pattern, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamcam.frames import Frame
from dreamcam.sinks.file import FileSink

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
ENV = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}


def dreamcam(*args: str) -> list[str]:
    return [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
            "--source", "testpattern", "--no-osc", "--frames", "3", *args]


def test_ctrl_c_during_the_model_load_says_so_and_leaves_no_empty_recording(tmp_path):
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(dreamcam("--sink", f"file:{out}"), stderr=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        for line in proc.stderr:
            if "loading model" in line:
                assert out.exists()  # the recorder opened before the load
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert rest.strip().splitlines()[-1].endswith("stopped during the model load; nothing was recorded"), rest
    assert "Traceback" not in rest
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("second", ["file:{d}/same.mp4?codec=mp4v", "file:{d}/sub/../same.mp4", "file:{d}/link.mp4"])
def test_two_recordings_of_one_file_are_refused_before_anything_opens(tmp_path, second):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "same.mp4")  # dangling until a recording makes same.mp4
    r = subprocess.run(dreamcam("--sink", f"file:{tmp_path}/same.mp4", "--sink", second.format(d=tmp_path)),
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dreamcam: error: --sink file:"), lines
    assert f"both record to {tmp_path}/same.mp4" in lines[0] and "give each recording its own file" in lines[0]
    assert not (tmp_path / "same.mp4").exists()


def test_two_names_of_one_existing_file_are_refused(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    os.link(tmp_path / "a.mp4", tmp_path / "b.mp4")
    r = subprocess.run(dreamcam("--sink", f"file:{tmp_path}/a.mp4", "--sink", f"file:{tmp_path}/b.mp4"),
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "one would overwrite the other" in r.stderr, r.stderr
    assert (tmp_path / "a.mp4").read_bytes() == b"x"


def test_two_recordings_of_different_files_run(tmp_path):
    r = subprocess.run(dreamcam("--sink", "file:a.mp4", "--sink", "file:b.mp4?codec=mp4v"),
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.mp4").stat().st_size > 1000 and (tmp_path / "b.mp4").stat().st_size > 1000


@pytest.mark.parametrize("codec", ["auto", "mp4v"])
def test_a_recorder_removes_only_a_file_it_made_and_left_empty(tmp_path, codec):
    new = tmp_path / "new.mp4"
    FileSink(str(new), 64, 64, codec=codec).start().close()
    assert not new.exists()  # made here, no frame: removed
    old = tmp_path / "old.mp4"
    old.write_bytes(b"older")
    FileSink(str(old), 64, 64, codec=codec).start().close()
    assert old.exists()  # there before: overwritten as by any recording, never removed
    kept = tmp_path / "kept.mp4"
    sink = FileSink(str(kept), 64, 64, codec=codec).start()
    sink.write(Frame(np.zeros((64, 64, 3), np.uint8), 1.0, 0))
    sink.close()
    assert kept.stat().st_size > 0 and sink.error is None
