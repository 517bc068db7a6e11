"""What a user reads when a source does not work: a camera that does not open also points to
sources that work anywhere, and a bare path is told to write file:PATH (image:PATH for a picture).

The camera here is real OpenCV asked for a device that is not there (this machine has none)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.sources import WebcamSource, open_source

ROOT = Path(__file__).resolve().parents[2]
ANYWHERE = "or try a source that works anywhere: --source testpattern, or a video with --source file:PATH"


@pytest.mark.parametrize("spec", ["webcam:97", "webcam:/dev/video97"])
def test_a_camera_that_does_not_open_suggests_a_source_that_works_anywhere(spec):
    src = open_source(spec)
    assert isinstance(src, WebcamSource)
    with pytest.raises(DeviceError) as e:
        src.start()
    src.close()
    message = str(e.value)
    assert "\n" not in message and message.endswith(ANYWHERE), message
    assert "dreamcam devices" in message  # the cameras that do open are still where they were


@pytest.mark.parametrize(
    "spec,hint",
    [
        ("clip.mp4", "to play a video file write --source file:clip.mp4"),
        ("videos/clip", "to play a video file write --source file:videos/clip"),
        ("~/clip.mkv", "to play a video file write --source file:~/clip.mkv"),
        ("photo.JPG", "to use a picture write --source image:photo.JPG"),
        ("/dev/video2", "to use that camera write --source webcam:/dev/video2"),
    ],
)
def test_a_bare_path_as_a_source_is_told_to_name_its_kind(spec, hint):
    with pytest.raises(ConfigError) as e:
        open_source(spec)
    assert str(e.value) == f"unknown source {spec!r}: {hint}"


def test_an_existing_file_without_a_video_suffix_is_told_file_colon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "take1").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="write --source file:take1$"):
        open_source("take1")


def test_a_word_that_is_no_path_still_lists_the_sources():
    with pytest.raises(ConfigError, match=r"unknown source 'hdmi'; use webcam\[:N"):
        open_source("hdmi")


def test_the_cli_says_file_colon_for_a_bare_path_in_one_line(tmp_path):
    clip = tmp_path / "clip.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--source", str(clip), "--sink", "null",
         "--frames", "1", "--no-osc"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"write --source file:{clip}" in errors[0], r.stderr
