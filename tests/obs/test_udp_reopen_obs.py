"""A real OBS Media Source keeps showing dreamcam's UDP stream after the sink re-opened it.

After failed sends the sink opens a new MPEG-TS stream whose timestamps and continuity counters
start again from zero. OBS (29, ffmpeg_source on udp://127.0.0.1:PORT) takes that: measured
here, it shows the new stream's frames within about 0.2 s of the re-open, both codecs, also
when the stream before had run an hour. This test guards it.

The outage is real: a `prohibit` route for 127.0.0.2 (needs root and iproute2) makes every send
to it fail with EACCES; OBS listens on all addresses of its port, so it receives what is sent to
127.0.0.2. The route is deleted after about a second, and in every case at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from coded_frames import H, W, code_of, coded
from obs_harness import OBS_MARKS, ObsStudio, free_port

av = pytest.importorskip("av")

from dreamcam.sinks.udp import UdpSink  # noqa: E402
from dreamcam.frames import Frame  # noqa: E402
from waiting import wait_until

BLOCKED = "127.0.0.2"
pytestmark = [*OBS_MARKS, pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("ip") is None,
    reason="blocking 127.0.0.2 with a prohibit route needs Linux, root and iproute2")]


def _route(op: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "route", op, "prohibit", f"{BLOCKED}/32", "table", "local"],
                          capture_output=True, text=True, timeout=10, check=False)


class _Feeder:
    """Writes numbered frames (`coded(i)`) to the sink at 30 fps from a thread; a context manager."""

    def __init__(self, sink: UdpSink) -> None:
        self.sink, self.i = sink, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-reopen-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sink.write(Frame(coded(self.i), time.perf_counter(), self.i))
            self.i += 1
            self._stop.wait(1 / 30)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> _Feeder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.mark.parametrize("codec", ["auto", "mpeg2"])
def test_obs_shows_the_stream_again_at_once_after_the_reopen(codec):
    _route("del")  # a route left by a run that was killed
    port = free_port(socket.SOCK_DGRAM)
    sink = UdpSink(BLOCKED, port, W, H, 30.0, codec=codec).start()
    try:
        with _Feeder(sink) as feed, ObsStudio() as studio:

            def shown() -> int:
                return code_of(studio.screenshot("dreamcam"))

            studio.media_source_screenshot(port, timeout_s=60, until=lambda im: code_of(im) > 0)
            time.sleep(2.0)
            lag = feed.i - shown()
            assert 0 <= lag < 30, f"OBS shows frame {feed.i - lag} while {feed.i} was sent"
            cut = _route("add")
            if cut.returncode != 0:  # root without CAP_NET_ADMIN (a container): no way to cut the route
                pytest.skip(f"cannot add a prohibit route here: {cut.stderr.strip()}")
            try:
                wait_until(lambda: sink.error is not None, timeout_s=5, what="the sends to fail")
                frozen = shown()
                time.sleep(1.0)
            finally:
                _route("del")
            wait_until(lambda: sink.error is None, timeout_s=10, what="the sink to re-open")
            back_at, reopened = time.monotonic(), feed.i  # frames from here on are in the new stream
            assert sink.outages == 1
            studio.screenshot("dreamcam", timeout_s=10, until=lambda im: code_of(im) >= reopened)
            recovered_s = time.monotonic() - back_at
            time.sleep(1.0)
            later = shown()
            sent = feed.i
    finally:
        sink.close()
        _route("del")
    print(f"{codec}: OBS showed the re-opened stream {recovered_s:.2f} s after it was back")
    assert frozen < reopened  # during the outage OBS had nothing newer
    assert recovered_s < 2.0, f"OBS took {recovered_s:.2f} s to show the re-opened stream"
    assert reopened + 20 <= later <= sent and sent - later < 30, (reopened, later, sent)  # and it keeps up
