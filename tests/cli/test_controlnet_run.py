"""`dreamcam run --controlnet tiny --control canny`: flags checked before anything loads, scale 0
gives the frames of a run without --controlnet and scale 1 other frames, and the scale changes
live over OSC (real UDP, the runner and controller of `dreamcam run`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dreamcam.backends import make_backend
from dreamcam.cli.main import build_parser
from dreamcam.cli.model_load import load_controlnets
from dreamcam.cli.run import check
from dreamcam.control.controller import Controller
from dreamcam.control.osc.server import OscServer
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError
from dreamcam.frames import fit
from dreamcam.runtime.runner import Runner
from dreamcam.sinks import Sink
from dreamcam.sources import TestPatternSource
from pythonosc.osc_message_builder import OscMessageBuilder

SIZE = 64
PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
BASE = ["run", "--model", "tiny", "--width", str(SIZE), "--height", str(SIZE), "--source", "testpattern",
        "--sink", "null", "--no-osc", "--device", "cpu"]


def plan(*flags):
    args = build_parser("run").parse_args([*BASE, *flags])
    return args, check(args)


def frames_of(tiny_pipe, *flags, n=3, model="tiny"):
    """What `dreamcam run` with these flags makes of n test-pattern frames (its engine and backend)."""
    args, p = plan(*flags, "--model", model)
    values = p.store.snapshot()
    control = load_controlnets(args, tiny_pipe, values)
    engine = StreamEngine(tiny_pipe, p.t_index, SIZE, SIZE, cfg_type=args.cfg_type, control=control)
    engine.prepare(values["prompt"], values["negative_prompt"], args.num_inference_steps, values["guidance"],
                   values["delta"], seed=values["seed"])
    src = TestPatternSource(96, 80)
    with make_backend("eager", engine) as b:
        return [b.process(fit(src.pattern(i * 7), SIZE, SIZE)) for i in range(n)]


@pytest.mark.parametrize("model", ["tiny", "toy"])
def test_scale_zero_gives_the_frames_without_controlnet_and_scale_one_others(tiny_pipe, model):
    if model == "toy":  # the trained toy model shipped with dreamcam
        from dreamcam.models.loading import load_pipeline

        tiny_pipe = load_pipeline("toy", device="cpu", progress=False)
    cn = ("--controlnet", "tiny", "--control", "canny")
    plain = frames_of(tiny_pipe, model=model)
    zero = frames_of(tiny_pipe, *cn, "--control-scale", "0", model=model)
    one = frames_of(tiny_pipe, *cn, "--control-scale", "1", model=model)
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))
    assert not any(np.array_equal(a, b) for a, b in zip(plain, one))


@pytest.mark.parametrize("flags,said", [
    (["--control", "canny"], "add --controlnet"),
    (["--controlnet", "tiny", "--control", "canny", "--control", "depth"], "one --control per --controlnet"),
    (["--controlnet", "tiny", "--control", "sketch"], "--control takes canny, softedge, depth, input"),
    (["--controlnet", "tiny", "--control", "canny,canny"], "each preprocessor once"),
    (["--controlnet", "tiny", "--preprocessor", "depth"], "ControlNet 1 has canny loaded"),
    (["--controlnet", "tiny", "--control-scale-2", "0.5"], "set ControlNet 2"),
    (["--controlnet", "tiny", "--control-scale", "3"], "between 0 and 2"),
])
def test_mistakes_are_one_line_before_anything_loads(flags, said):
    with pytest.raises(ConfigError, match=said):
        plan(*flags)


def test_run_with_controlnet_says_what_runs():
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", *BASE, "--frames", "2", "--controlnet", "tiny",
           "--control", "canny,softedge", "--preprocessor", "softedge", "--control-scale", "0.7"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "ControlNet 1: tiny, preprocessor softedge (of canny, softedge), scale 0.7" in r.stderr


def _msg(address, value):
    b = OscMessageBuilder(address)
    b.add_arg(value)
    return b.build().dgram


def test_control_scale_changes_live_over_osc(tiny_pipe):
    args, p = plan("--controlnet", "tiny", "--control", "canny", "--steps", "1", "--cfg", "none")
    store = p.store
    store.set("transition", 0.0)
    store.take_changes()
    values = store.snapshot()

    def engine(control):
        e = StreamEngine(tiny_pipe, p.t_index, SIZE, SIZE, cfg_type="none", control=control)
        e.prepare(values["prompt"], seed=values["seed"])
        return e

    live = engine(load_controlnets(args, tiny_pipe, values))
    source = TestPatternSource(96, 80, fps=8)
    got: list[tuple[int, np.ndarray]] = []

    class Keep(Sink):
        """A real Sink keeping every frame it is given."""

        kind = "recording"
        depth = 10_000

        def _send(self, frame) -> None:
            if frame.index >= 0:  # -1: a repeat while the source was silent
                got.append((frame.index, frame.image.copy()))

    arrival = []
    sink = Keep(SIZE, SIZE)
    with sink.start(), make_backend("eager", live) as backend, Controller(live, store) as ctrl, source.start():
        runner = Runner(source, backend, [sink], width=SIZE, height=SIZE, controller=ctrl)
        store.subscribe(lambda name, value: arrival.append(runner.stats.frames))
        loop = threading.Thread(target=runner.run, name="test-runner")
        loop.start()
        try:
            with OscServer(store, port=0) as srv, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                deadline = time.monotonic() + 300
                while runner.stats.frames < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                c.sendto(_msg("/dreamcam/control_scale", 0.0), ("127.0.0.1", srv.port))
                while not arrival or len(got) < arrival[0] + 3:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
        finally:
            runner.stop()
            loop.join(60)
    assert live.control.units[0].scale == 0.0
    plain = engine(None)
    with_cn = engine(load_controlnets(args, tiny_pipe, values))

    def same(e, index, out):
        return np.array_equal(e.img2img(fit(source.pattern(index), SIZE, SIZE)), out)

    index, out = got[0]
    assert same(with_cn, index, out) and not same(plain, index, out)
    index, out = got[-1]  # at least two frames after the message arrived
    assert same(plain, index, out)
