"""A real OBS Media Source on dreamcam's UDP stream, with the settings docs/usage.md gives:
started after the stream at a slow engine rate it shows the picture quickly, and glass to glass
(frame handed to the sink -> seen in an obs-websocket screenshot) stays well under the 0.8 s
that the Media Source's default stream probing adds.

Frames carry their number (`coded_frames`), so a screenshot tells which frame OBS shows.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import numpy as np
import pytest

from coded_frames import H, W, code_of, coded
from obs_harness import OBS_MARKS, SCENE, ObsStudio, free_port

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from dreamcam.frames import Frame  # noqa: E402
from dreamcam.sinks.udp import OBS_FFMPEG_OPTIONS, UdpSink  # noqa: E402

pytestmark = OBS_MARKS


class _Feeder:
    """Writes numbered frames to the sink at `fps` from a thread, remembering when each went."""

    def __init__(self, sink: UdpSink, fps: float) -> None:
        self.sink, self.fps, self.sent = sink, fps, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obs-latency-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            t = time.perf_counter()
            self.sent[i] = t
            self.sink.write(Frame(coded(i), t, i))
            i += 1
            self._stop.wait(1 / self.fps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _add_source(studio: ObsStudio, port: int) -> float:
    """The Media Source as docs/usage.md sets it up; returns when it was created."""
    studio.client.create_input(SCENE, "dreamcam", "ffmpeg_source", {
        "is_local_file": False, "input": f"udp://127.0.0.1:{port}", "input_format": "mpegts",
        "hw_decode": False, "ffmpeg_options": OBS_FFMPEG_OPTIONS}, True)
    return time.perf_counter()


def _shown(studio: ObsStudio) -> tuple[float, int] | None:
    """(when, frame number) of what the source shows now; None before its first picture."""
    try:
        data = studio.client.get_source_screenshot("dreamcam", "png", None, None, None).image_data
    except Exception:  # noqa: BLE001 - 702 until the source rendered once
        return None
    t = time.perf_counter()
    img = cv2.imdecode(np.frombuffer(base64.b64decode(data.split(",", 1)[1]), np.uint8), cv2.IMREAD_GRAYSCALE)
    if img.max() < 16:  # black: nothing decoded yet
        return None
    return t, code_of(np.repeat(img[..., None], 3, axis=2))


def _stream(fps: float):
    port = free_port(socket.SOCK_DGRAM)
    sink = UdpSink("127.0.0.1", port, W, H, 30.0).start()
    return port, sink, _Feeder(sink, fps)


def test_a_media_source_started_after_a_2_fps_stream_shows_it_within_2_s():
    with ObsStudio(width=W, height=H) as studio:
        port, sink, feeder = _stream(2.0)
        try:
            time.sleep(1.2)  # the stream runs before OBS listens
            created = _add_source(studio, port)
            seen = None
            while seen is None and time.perf_counter() - created < 10:
                seen = _shown(studio)
                time.sleep(0.02)
        finally:
            feeder.close()
            sink.close()
    assert seen is not None, "no picture within 10 s"
    # keyframes every second + one 0.5 s frame interval; measured 0.6-1.2 s here
    assert seen[0] - created < 2.0, seen[0] - created


def test_glass_to_glass_in_obs_is_under_half_a_second_at_30_fps():
    """Measured here (2-core VM, software OpenGL): a new frame shows after 0.17 s (median) with
    these settings, 0.74 s with the Media Source's defaults; PyAV decoding the same stream: 35 ms."""
    with ObsStudio(width=W, height=H) as studio:
        port, sink, feeder = _stream(30.0)
        try:
            created = _add_source(studio, port)
            latencies = []
            while time.perf_counter() - created < 5:
                seen = _shown(studio)
                if seen is not None and seen[1] in feeder.sent and time.perf_counter() - created > 2:
                    latencies.append(seen[0] - feeder.sent[seen[1]])
                time.sleep(0.01)
        finally:
            feeder.close()
            sink.close()
    assert len(latencies) > 20
    assert np.median(latencies) < 0.5, np.percentile(latencies, [10, 50, 90])
