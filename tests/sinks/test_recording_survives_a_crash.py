"""A recording survives the process dying without finishing it (SIGKILL; power loss and a driver
crash look the same to the file) and a disk that fills mid-run: real FileSinks, real PyAV, real
files; the kept frames are counted by decoding with PyAV and, where installed, with ffprobe."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.frames import Frame  # noqa: E402
from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.sinks.file import FileSink  # noqa: E402

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
FPS = 30
needs_h264 = pytest.mark.skipif(video_codec() != "libx264", reason="this PyAV has no libx264 (the H.264 recorder)")

# The harness: the real FileSink fed at 30 fps; it prints each frame's index once handed over
HARNESS = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from dreamcam.frames import Frame
    from dreamcam.sinks.file import FileSink
    sink = FileSink(sys.argv[1], 128, 96, 30.0, codec=sys.argv[2]).start()
    for i in range(100000):
        sink.write(Frame(np.full((96, 128, 3), (i * 7) % 256, np.uint8), time.perf_counter(), i))
        print(i, flush=True)
        time.sleep(1 / 30)
    """
)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def ffprobe_frames(path: Path) -> int | None:
    if shutil.which("ffprobe") is None:
        return None
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return int(r.stdout.split()[0])


def kill_while_recording(path: Path, seconds: float, codec: str = "auto") -> int:
    """Run the harness, SIGKILL it after `seconds`; the frames it had handed to the recorder."""
    env = {**os.environ, "PYTHONPATH": PLUGIN}
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, str(path), codec], stdout=subprocess.PIPE, text=True, env=env)
    written = 0
    deadline = None
    try:
        for line in proc.stdout:
            written = int(line) + 1
            if deadline is None:
                deadline = time.monotonic() + seconds  # from the first frame: the import is not the run
            if time.monotonic() >= deadline:
                proc.send_signal(signal.SIGKILL)
                break
        written += len(proc.stdout.read().split())  # handed over before the kill, not yet read here
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return written


H264 = [pytest.param(n, "auto", marks=needs_h264) for n in ("out.mp4", "out.mov", "out.mkv", "out.m4v")]


@pytest.mark.parametrize(("name", "codec"), [*H264, ("out.mp4", "mp4v"), ("out.mkv", "mp4v")])
def test_a_killed_recording_plays_all_but_its_last_second(tmp_path, name, codec):
    rng = random.Random(name)  # random moments, the same ones each run
    for run in range(3):
        path = tmp_path / f"{run}-{name}"
        written = kill_while_recording(path, rng.uniform(2.0, 4.0), codec)
        kept = decoded_frames(path)
        probed = ffprobe_frames(path)
        # at most about a second (one fragment) lost, and a little slack for the encoder's queue
        # on a loaded machine; never more than were handed over
        assert written - 1.5 * FPS <= kept <= written, (name, codec, run, written, kept)
        assert probed in (None, kept), (name, codec, run, probed, kept)
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.name == ("mpeg4" if codec == "mp4v" else "h264")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root, as in the test machine's container); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_h264
@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "out.mov", "out.avi", "out.ts"])
def test_a_recording_that_fills_the_disk_plays_up_to_the_last_whole_second(small_disk, name):
    path = small_disk / name
    rng = np.random.default_rng(0)  # incompressible frames: the 2 MiB fill in a few seconds
    sink = FileSink(str(path), 128, 128, 30.0).start()
    written = 0
    while sink.error is None and written < 3000:
        sink.write(Frame(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), time.perf_counter(), written))
        written += 1
        time.sleep(0.01)
    sink.close()
    assert isinstance(sink.error, OSError) and "No space left" in str(sink.error)
    kept = decoded_frames(path)  # every packet decodes: the file ends on a whole fragment
    assert 30 <= kept <= written, (written, kept)
    assert ffprobe_frames(path) in (None, kept)
