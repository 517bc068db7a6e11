"""A PyAV output that fails to start leaves no file descriptor open (counted in /proc/self/fd)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.sinks.file import FileSink  # noqa: E402
from dreamcam.errors import DeviceError  # noqa: E402
from dreamcam.frames import Frame  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd, writes /dev/full")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fail_to_start(make, times: int = 5) -> list[str]:
    messages = []
    for _ in range(times):
        with pytest.raises(DeviceError) as e:
            make().start()
        messages.append(str(e.value))
    return messages


@pytest.mark.skipif(video_codec() != "libx264", reason="this PyAV has no libx264 (the recorder uses OpenCV)")
def test_a_recording_whose_header_cannot_be_written_closes_its_file(tmp_path):
    # FFmpeg opens the file, then writing the header fails (the disk is full): PyAV's close()
    # closes only an output that started, so each failed start kept one descriptor for good
    full = tmp_path / "out.mp4"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    FileSink(str(tmp_path / "warm.mp4"), 64, 64).start().close()  # imports and codec set-up first
    before = _fds()
    messages = _fail_to_start(lambda: FileSink(str(full), 64, 64))
    assert _fds() == before, f"{_fds() - before} descriptors leaked by 5 failed starts"
    assert all(m.startswith(f"cannot write to {full}: ") and "No space left" in m for m in messages), messages
    # and a recording that starts still has every frame, with the header, index and trailer in place
    rec = tmp_path / "ok.mkv"
    sink = FileSink(str(rec), 64, 64, 30.0).start()
    for i in range(10):
        sink._send(Frame(np.full((64, 64, 3), 20 * i, np.uint8), 1000.0 + i / 30, i))
    sink.close()
    assert sink.error is None and _fds() == before
    with av.open(str(rec)) as c:
        assert len(list(c.decode(video=0))) == 10


def test_recordings_that_cannot_be_opened_leave_no_descriptor(tmp_path):
    FileSink(str(tmp_path / "warm.mkv"), 64, 64).start().close()
    (tmp_path / "folder.mp4").mkdir()
    before = _fds()
    for m in _fail_to_start(lambda: FileSink(str(tmp_path / "folder.mp4"), 64, 64)):  # EISDIR
        assert m.startswith(("cannot write to ", "cannot record to ")), m
    _fail_to_start(lambda: FileSink(str(tmp_path / "out.nosuchformat"), 64, 64))
    assert _fds() == before, f"{_fds() - before} descriptors leaked"


@pytest.mark.skipif(video_codec() != "libx264", reason="this PyAV has no libx264 (the recorder uses OpenCV)")
@pytest.mark.parametrize("name", ["out.mkv", "out.mov"])
def test_a_full_disk_stops_any_recording_at_start(tmp_path, name):
    # FFmpeg's own file output buffered the Matroska header (32 KiB buffer): on a full disk the
    # recording started and failed only later (a failure named at exit), not at start as the
    # README says; MP4 / MOV write theirs at once (a guard here)
    full = tmp_path / name
    full.symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(DeviceError, match=f"^cannot write to {full}: .*No space left"):
        FileSink(str(full), 64, 64).start()
