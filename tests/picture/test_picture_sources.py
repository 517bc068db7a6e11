"""Every source kind that runs here, every fit mode, through the Runner (and the file sink): the
toy model's output shows the framed input the right way up, round and coloured.

Real sources (test pattern, a PNG, an MP4 file, an Xvfb screen), real runner and sink threads,
the real eager backend and the trained toy model; nothing is mocked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dreamcam.backends.eager import EagerBackend
from dreamcam.frames import FIT_MODES, fit
from dreamcam.runtime.runner import Runner
from dreamcam.sinks.file import FileSink
from dreamcam.sources import ImageSource, ScreenSource, TestPatternSource, VideoFileSource

from picture_checks import SIZE, assert_same_picture, corr, engine, pattern
from recording import RecordingSink
from xvfb_screen import BACKGROUND, SCREEN_H, SCREEN_W, SQUARE, SQUARE_BOX, Xvfb

W, H = 200, 120  # a wide source, so crop, letterbox and stretch frame it differently
STILL = pattern(W, H)


def run(pipe, src, mode: str, frames: int = 3, extra_sinks=()) -> RecordingSink:
    sink = RecordingSink(SIZE, SIZE)
    with sink, src:
        Runner(src, EagerBackend(engine(pipe)), [sink, *extra_sinks], width=SIZE, height=SIZE,
               frames=frames, fit_mode=mode).run()
    assert sink.frames, "the runner emitted nothing"
    return sink


@pytest.mark.parametrize("mode", FIT_MODES)
def test_testpattern_source(toy_pipe, mode):
    sink = run(toy_pipe, TestPatternSource(W, H, fps=60), mode)
    last = sink.frames[-1]
    assert_same_picture(last.image, fit(pattern(W, H, last.index), SIZE, SIZE, mode))


@pytest.mark.parametrize("mode", FIT_MODES)
def test_image_source(toy_pipe, tmp_path, mode):
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), STILL[..., ::-1])  # OpenCV writes BGR
    sink = run(toy_pipe, ImageSource(str(path), fps=60), mode)
    assert_same_picture(sink.frames[-1].image, fit(STILL, SIZE, SIZE, mode))


@pytest.mark.parametrize("mode", FIT_MODES)
def test_video_file_source(toy_pipe, tmp_path, mode):
    path = tmp_path / "still.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    for _ in range(10):
        out.write(np.ascontiguousarray(STILL[..., ::-1]))
    out.release()
    sink = run(toy_pipe, VideoFileSource(str(path)), mode)
    assert_same_picture(sink.frames[-1].image, fit(STILL, SIZE, SIZE, mode))


def test_screen_source(toy_pipe, monkeypatch):
    with Xvfb() as x:
        x.paint()
        monkeypatch.setenv("DISPLAY", x.display)
        sink = run(toy_pipe, ScreenSource(1, fps=30), "stretch")
    screen = np.empty((SCREEN_H, SCREEN_W, 3), np.uint8)
    screen[:] = BACKGROUND
    bx, by, bw, bh = SQUARE_BOX
    screen[by : by + bh, bx : bx + bw] = SQUARE
    assert_same_picture(sink.frames[-1].image, fit(screen, SIZE, SIZE, "stretch"), min_corr=0.7)


def test_file_sink_records_what_the_engine_made(toy_pipe, tmp_path):
    path = tmp_path / "out.mp4"
    img = tmp_path / "still.png"
    cv2.imwrite(str(img), STILL[..., ::-1])
    recorder = FileSink(str(path), SIZE, SIZE, fps=30)
    with recorder:
        sink = run(toy_pipe, ImageSource(str(img), fps=60), "crop", frames=4, extra_sinks=[recorder])
    cap = cv2.VideoCapture(str(path))
    recorded = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        recorded.append(bgr[..., ::-1])
    cap.release()
    assert recorded, "the file holds no frames"
    assert corr(recorded[-1], sink.frames[-1].image) > 0.95
    assert_same_picture(recorded[-1], fit(STILL, SIZE, SIZE, "crop"))
