"""The flicker meter on the live path agrees with a computation of its own made here on the
recording: the tiny model (real architecture, random weights) runs a lossless clip through the
runner into a real file sink with the meter on; the test reads the recording and the clip back
with PyAV and computes the warping error with its own warp and occlusion code (numpy bilinear
sampling, its own forward-backward check and still rule; the optical flow is the same DIS flow,
the method the figure is defined with). The live figure also reaches /dreamcam/status over a real UDP socket.

Tolerance: the recording is H.264 (yuv420p, high bitrate), so its pixels are the output's up to
coding loss and chroma subsampling, which smooth a little flicker away (the recording read 3-5 %
lower when this was written): the means must agree within 10 %, each pair within 12 %. On the
very frames the sinks got (a second, recording sink) the meter and the code here agree within 1 %."""

from __future__ import annotations

import json
import socket

import av
import cv2
import numpy as np
import pytest
from dreamcam import StreamEngine
from dreamcam.backends import make_backend
from dreamcam.bench.clips import ClipSpec, write_clip
from dreamcam.bench.flicker import ClipSource, read_clip
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import ParamStore
from dreamcam.runtime.flicker import CUT_GREY, REL_FLOOR, STILL_BLOCK, STILL_PX, STILL_SLACK, STILL_TOL, FlickerMeter
from dreamcam.runtime.runner import Runner
from dreamcam.sinks.file import FileSink
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from recording import RecordingSink

SIZE = 64
FRAMES = 8


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img (H, W, C) float sampled at (x, y), edges repeated."""
    h, w = img.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    bottom = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def box_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over the k x k neighbourhood of each pixel (k odd), borders mirrored without repeating
    the edge pixel (OpenCV's default border), by summed-area table."""
    r = k // 2
    pad = [(r, r), (r, r)] + [(0, 0)] * (img.ndim - 2)
    table = np.pad(img.astype(np.float64), pad, mode="reflect").cumsum(0).cumsum(1)
    table = np.pad(table, [(1, 0), (1, 0)] + [(0, 0)] * (img.ndim - 2))
    h, w = img.shape[:2]
    return (table[k:k + h, k:k + w] - table[:h, k:k + w] - table[k:k + h, :w] + table[:h, :w]) / (k * k)


def reference_errors(in_prev, in_cur, out_prev, out_cur) -> tuple[float, float]:
    """(output, input) warping error, grey levels: DIS flow, the rest written here."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (in_prev, in_cur))
    back, fwd = dis.calc(g1, g0, None).astype(np.float64), dis.calc(g0, g1, None).astype(np.float64)
    h, w = g1.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = xx + back[..., 0], yy + back[..., 1]
    f_at = bilinear(fwd, x, y)
    agree = ((back + f_at) ** 2).sum(-1) <= 0.01 * ((back**2).sum(-1) + (f_at**2).sum(-1)) + 0.5
    valid = agree & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    # the still rule: where the neighbourhood's mean flow is small and zero motion explains the
    # input about as well as the flow, the pixel is compared with the same pixel of frame k-1
    g0f, g1f = g0.astype(np.float64), g1.astype(np.float64)
    flow_err = np.abs(bilinear(g0f[..., None], x, y)[..., 0] - g1f)
    small = (box_mean(back, STILL_BLOCK) ** 2).sum(-1) < STILL_PX**2
    explained = box_mean(np.abs(g1f - g0f), STILL_BLOCK) <= STILL_TOL * box_mean(flow_err, STILL_BLOCK) + STILL_SLACK
    still = small & explained
    x, y = np.where(still, xx, x), np.where(still, yy, y)
    valid |= still

    def err(prev, cur):
        return float(np.abs(bilinear(prev.astype(np.float64), x, y) - cur)[valid].mean())

    return err(out_prev, out_cur), err(in_prev, in_cur)


def decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def status_over_udp(port: int) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        s.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
    return json.loads(OscMessage(data).params[0])


@pytest.fixture(scope="module")
def recorded(tiny_pipe, tmp_path_factory):
    """(clip frames, recorded frames, exact output frames, the meter's summary and samples, /dreamcam/status)."""
    folder = tmp_path_factory.mktemp("flicker")
    clip, out = folder / "clip.mkv", folder / "out.mp4"
    write_clip(str(clip), ClipSpec(SIZE, SIZE, fps=10, still_s=FRAMES / 10, after_s=0, noise=4.0, pan=1.0), lossless=True)
    engine = StreamEngine(tiny_pipe, [30], SIZE, SIZE, cfg_type="none")
    engine.prepare("a watercolor fox")
    source = ClipSource(read_clip(str(clip), SIZE, SIZE, FRAMES)[0])
    exact = RecordingSink(SIZE, SIZE)
    with make_backend("eager", engine) as backend, FileSink(str(out), SIZE, SIZE, 10, bitrate=20_000_000) as sink, \
            exact, FlickerMeter(SIZE, SIZE, rate=None) as meter:
        runner = Runner(source, backend, [sink, exact], width=SIZE, height=SIZE, frames=FRAMES, meter=meter)
        summary = runner.run()
        with OscServer(ParamStore(), port=0, status=runner.status) as osc:
            state = status_over_udp(osc.port)
        samples = meter.history()
    return decode(clip), decode(out), [f.image for f in exact.frames], summary, samples, state


def test_the_meter_agrees_with_a_computation_on_the_recording(recorded):
    clip, rec, exact, summary, samples, _ = recorded
    assert len(rec) == len(clip) == len(exact) == FRAMES
    # every pair of consecutive frames was measured (the meter keeps up with a CPU model), none is a cut
    assert summary["flicker_samples"] == FRAMES - 1 and summary["flicker_cuts"] == 0 and summary["flicker_dropped"] == 0
    ref = [reference_errors(clip[k - 1], clip[k], rec[k - 1], rec[k]) for k in range(1, FRAMES)]
    assert all(i < CUT_GREY for _, i in ref)
    for s in samples:  # pair by pair: sample k is frames (k - 1, k)
        k = s.index
        out_ref, in_ref = ref[k - 1]
        assert s.prev_index == k - 1
        # on the very frames (the clip, the outputs as the sinks got them) only the code differs
        assert s.input_error == pytest.approx(in_ref, rel=0.01)
        assert s.flicker == pytest.approx(reference_errors(clip[k - 1], clip[k], exact[k - 1], exact[k])[0], rel=0.01)
        assert s.flicker == pytest.approx(out_ref, rel=0.12), (k, s.flicker, out_ref)
    out_mean = np.mean([o for o, _ in ref])
    in_mean = np.mean([i for _, i in ref])
    assert summary["flicker"] == pytest.approx(out_mean, rel=0.10)
    assert summary["flicker_rel"] == pytest.approx(out_mean / max(in_mean, REL_FLOOR), rel=0.10)
    assert summary["flicker"] > 0.5  # a random-weight model does flicker: the comparison is not of zeros


def test_the_figure_reaches_the_status_reply(recorded):
    *_, samples, state = recorded
    assert isinstance(state["flicker"], float) and isinstance(state["flicker_rel"], float)
    # the live figure is the mean over the last 2 s (at least the last 3 pairs): how many pairs that
    # is depends on the machine's speed, so it lies within the range of the pairs measured
    every = [s.flicker for s in samples]
    assert min(every) - 0.01 <= state["flicker"] <= max(every) + 0.01
