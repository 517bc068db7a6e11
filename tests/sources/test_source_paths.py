"""File paths in source, sink and LoRA specs as users on Linux, Windows and macOS type them:
non-ASCII names, `~`, drive letters."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from dreamcam.cli.models import parse_lora
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks import open_sink
from dreamcam.sources.specs import open_source


def _photo(path):
    image = np.zeros((24, 40, 3), np.uint8)
    image[:, :20] = (0, 0, 255)  # BGR red on the left
    path.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return path


def test_image_source_reads_a_non_ascii_path_where_imread_cannot(tmp_path, monkeypatch):
    # Windows' cv2.imread returns None for any path with non-ASCII characters (opencv/opencv#4292);
    # Linux's does not, so that behaviour is stood in for here (the one thing mocked)
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda p, *a: None if not str(p).isascii() else real_imread(p, *a))
    path = _photo(tmp_path / "Zoë 写真.png")
    with open_source(f"image:{path}", fps=50) as src:
        frame = src.read(timeout=2.0)
    assert frame.image.shape == (24, 40, 3)
    assert tuple(frame.image[0, 0]) == (255, 0, 0) and tuple(frame.image[0, -1]) == (0, 0, 0)


def test_image_source_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DeviceError, match="cannot read image"):
        open_source(f"image:{path}").start()


def test_tilde_in_file_and_image_specs_means_the_home_folder(tmp_path, monkeypatch):
    # "file:~/clip.mp4" reaches dreamcam unexpanded: no shell expands ~ after "file:", and cmd.exe
    # never does; HOME (USERPROFILE on Windows) is what os.path.expanduser reads
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    _photo(tmp_path / "photo.png")
    with open_source("image:~/photo.png", fps=50) as src:
        assert src.read(timeout=2.0).image.shape == (24, 40, 3)
    sink = open_sink("file:~/out.mp4", width=64, height=64, fps=10)
    assert sink.path == str(tmp_path / "out.mp4")
    with sink:
        sink.write(Frame(np.zeros((64, 64, 3), np.uint8), 0.0, 0))
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_windows_drive_letter_paths_in_specs_keep_their_colon():
    # guards the spec parsing (split at the first ':' for sources/sinks, the last for --lora)
    assert open_source(r"file:C:\Videos\clip.mp4").path == r"C:\Videos\clip.mp4"
    assert open_source(r"image:D:\photo.png").path == r"D:\photo.png"
    assert open_sink(r"file:C:\rec\out.mp4?size=640x360", width=64, height=64).path == r"C:\rec\out.mp4"
    assert parse_lora(r"C:\loras\ink.safetensors:0.8") == (r"C:\loras\ink.safetensors", 0.8)
    assert parse_lora(r"C:\loras\ink.safetensors") == (r"C:\loras\ink.safetensors", 1.0)
    with pytest.raises(ConfigError, match="scale after ':' must be a number"):
        parse_lora(r"C:\loras\ink.safetensors:strong")
