"""A camera lost mid-run: the real runner keeps its output going with the last good frame, then
the "no signal" card, and resumes by itself when the camera (a video file read through the
webcam source's VideoCapture path) comes back.

The runner runs in its bypass mode (`--bypass`: frames pass the engine untouched, through the
real Controller and ParamStore), so the test is about the source and the loop, not the model.
"""

from __future__ import annotations

import os
import threading
import time

from dreamcam.sources import WebcamSource
from test_sources import write_clip


def test_runner_rides_through_camera_loss(tmp_path):
    from dreamcam.control.controller import Bypass
    from dreamcam.runtime.runner import Runner
    from dreamcam.sinks import open_sink

    clip = write_clip(tmp_path / "cam.mp4", frames=8)
    gone = str(tmp_path / "unplugged.mp4")
    src = WebcamSource(clip, retry_first_s=0.2, retry_max_s=0.4)
    with open_sink("null", width=64, height=64) as sink, src:
        # the card after 0.8 s of silence instead of 3 s, to keep the test short
        run = Runner(src, None, [sink], width=64, height=64, controller=Bypass(), no_signal_after=0.8)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(run.run()), name="test-runner")
        os.rename(clip, gone)
        t.start()
        try:
            deadline = time.monotonic() + 10
            while not src.signal_lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert src.signal_lost
            time.sleep(0.3)  # the runner takes what the source had before it went silent
            frames_before = run.stats.frames
            time.sleep(1.5)  # longer than NO_SIGNAL_AFTER_S: last frame, then the card
            assert run.stats.frames == frames_before and run._no_signal is not None
            repeats = run.stats.repeats
            assert repeats >= 10  # output kept flowing at ~10 fps while silent
            written_silent = sink.written
            os.rename(gone, clip)
            deadline = time.monotonic() + 5
            while run.stats.frames < frames_before + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert run.stats.frames >= frames_before + 3 and src.reconnects >= 1
            assert sink.written > written_silent and t.is_alive()
        finally:
            run.stop()
            t.join(timeout=5)
    assert not t.is_alive() and result["frames"] >= frames_before + 3
    assert src.error is None and sink.error is None


def test_a_screen_grab_failure_without_a_message_still_names_what_failed():
    import pytest

    from dreamcam.sources import SignalLost
    from dreamcam.sources import ScreenSource

    class Gone:  # an mss grabber whose display vanished and whose error has no text
        def grab(self, box):
            raise OSError()

    src = ScreenSource(1)
    src._sct, src.box = Gone(), {"left": 0, "top": 0, "width": 8, "height": 8}
    with pytest.raises(SignalLost, match="screen grab failed: OSError$"):
        src._grab()
