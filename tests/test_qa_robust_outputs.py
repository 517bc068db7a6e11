"""Outputs under fault: a recorder whose disk fills up, a recording that cannot be written at all,
a UDP stream whose sends fail for a while. Real files, real PyAV, real loopback sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamcam.sinks import udp  # noqa: E402
from dreamcam.sinks.encoders import video_codec  # noqa: E402
from dreamcam.sinks.udp import UdpSink  # noqa: E402
from dreamcam.frames import Frame  # noqa: E402

PLUGIN = str(Path(__file__).resolve().parents[1] / "plugin")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (RLIMIT_FSIZE, /dev/full)")
needs_h264 = pytest.mark.skipif(video_codec() != "libx264", reason="this PyAV has no libx264 (the recorder uses OpenCV)")


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60, **kw)


@linux_only
@needs_h264
def test_a_recording_that_fills_the_disk_reports_it_and_the_other_outputs_still_close(tmp_path):
    # A real "disk full" mid-run: the child may write files of at most 12 KiB (RLIMIT_FSIZE; the
    # write fails with EFBIG), and records incompressible frames. Closing the recorder then fails
    # to finish the file: that is its `error`, never an exception out of close() (the CLI's
    # ExitStack would print a traceback instead of one line, and skip the stats file).
    r = _python(
        f"""
        import contextlib, resource, signal, time
        import numpy as np
        from dreamcam.sinks.file import FileSink
        from dreamcam.frames import Frame
        from dreamcam.sinks.base import NullSink
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12 << 10, 12 << 10))
        rng = np.random.default_rng(0)
        null = NullSink(64, 64)
        rec = FileSink({str(tmp_path / "out.mp4")!r}, 128, 128)
        with contextlib.ExitStack() as stack:
            stack.enter_context(null)
            stack.enter_context(rec)
            for i in range(40):
                f = Frame(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), time.perf_counter(), i)
                rec.write(f); null.write(f)
                time.sleep(0.005)
        rec.close()  # again: idempotent
        print("ERROR", type(rec.error).__name__, rec.error)
        print("NULL_CLOSED", null._closing.is_set())
        """
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "ERROR " in r.stdout and "File too large" in r.stdout and "NULL_CLOSED True" in r.stdout


@linux_only
@needs_h264
def test_a_recording_that_cannot_be_written_fails_at_start(tmp_path):
    # PyAV opens the file only when it writes the header: without writing it at start, a disk
    # that is full from the first byte failed at the first frame, and the next frame's mux
    # crashed the process (SIGSEGV in PyAV), taking every other output down with it.
    full = tmp_path / "out.mp4"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    r = _python(
        f"""
        import time
        import numpy as np
        from dreamcam.sinks.file import FileSink
        from dreamcam.errors import DeviceError
        from dreamcam.frames import Frame
        sink = FileSink({str(full)!r}, 64, 64)
        try:
            sink.start()
        except DeviceError as e:
            print("START", e)
            raise SystemExit(0)
        for i in range(5):
            sink.write(Frame(np.zeros((64, 64, 3), np.uint8), time.perf_counter(), i))
            time.sleep(0.1)
        sink.close()
        print("RAN", sink.error)
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    line = r.stdout.strip()
    assert line.startswith("START cannot write to ") and str(full) in line and "No space left" in line
    assert "\n" not in line


class _ConnectedUdpSink(UdpSink):
    """The real UDP sink with FFmpeg's `connect=1`: the kernel then reports a loopback port that
    nobody listens on (ICMP port unreachable) as ECONNREFUSED on the next send, until someone
    listens there. A real send failure that comes and goes, on 127.0.0.1 only."""

    @property
    def url(self) -> str:
        return super().url + "&connect=1"


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_udp_stream_comes_back_after_its_sends_failed(monkeypatch):
    # FFmpeg's output keeps its first write error for good: before the fix one failed send (a
    # network blip) ended the stream for the rest of the run.
    monkeypatch.setattr(udp, "RESEND_FIRST_S", 0.1)
    monkeypatch.setattr(udp, "RESEND_MAX_S", 0.4)
    port = _free_udp_port()
    rng = np.random.default_rng(0)
    rx = None
    sink = _ConnectedUdpSink("127.0.0.1", port, 64, 64, 30.0).start()
    try:
        deadline = time.monotonic() + 5.0
        while sink.error is None and time.monotonic() < deadline:  # nobody listens: sends fail
            sink.write(Frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), time.perf_counter()))
            time.sleep(1 / 30)
        assert isinstance(sink.error, OSError), sink.error
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", port))
        rx.settimeout(0.02)
        written, data = sink.written, b""
        deadline = time.monotonic() + 5.0
        while sink.written - written < 10 and time.monotonic() < deadline:
            sink.write(Frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), time.perf_counter()))
            time.sleep(1 / 30)
            try:
                while True:
                    data += rx.recv(65536)
            except OSError:
                pass
        assert sink.written - written >= 10, f"the stream did not come back: {sink.written - written} frames sent"
        assert sink.error is None and sink.outages == 1  # back: the run does not end in "output failed"
    finally:
        sink.close()
        if rx is not None:
            rx.close()
    # what arrived is a stream a player can join: it decodes to 64x64 pictures
    import io

    with av.open(io.BytesIO(data), format="mpegts") as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) >= 5 and frames[0].shape == (64, 64, 3)


@needs_h264
def test_sigterm_while_the_model_loads_leaves_a_finished_recording(tmp_path):
    # the recorder writes its header at start; SIGTERM during the (slow) model load killed the
    # process before the file got its index: an mp4 no player opens ("moov atom not found")
    import signal
    import subprocess as sp

    out = tmp_path / "out.mp4"
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
           "--source", "testpattern", "--sink", f"file:{out}", "--no-osc", "--frames", "5"]
    proc = sp.Popen(cmd, stderr=sp.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "loading model" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "Traceback" not in rest
    with av.open(str(out)) as c:  # a finished recording (with no frames yet): it opens
        assert "mp4" in c.format.name
