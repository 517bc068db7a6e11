"""End to end: the runner with the tiny model and a test pattern, steered over real UDP OSC.

Each change (prompt, strength, seed) must show in the output by the second frame started after
the OSC message arrived: outputs are checked against a reference engine prepared with the new
values for the same input frame. `/dreamcam/status` answers with the runner's stats.
"""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest
from dreamcam.backends import make_backend
from dreamcam.control.controller import Controller
from dreamcam.engine.schedule import strength_to_t_index_list
from dreamcam.engine.stream import StreamEngine
from dreamcam.frames import fit
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import ParamStore
from dreamcam.runtime.runner import Runner
from dreamcam.sinks import Sink
from dreamcam.sources import TestPatternSource
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from waiting import wait_until

SIZE = 64


class RecordingSink(Sink):
    """A real Sink that keeps every frame it is given, in order (nothing dropped)."""

    kind = "recording"
    depth = 10_000

    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height)
        self.frames: list[tuple[int, np.ndarray]] = []

    def _send(self, frame) -> None:
        if frame.index >= 0:  # -1: a repeat while the source was silent
            self.frames.append((frame.index, frame.image.copy()))


def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def make_engine(pipe, prompt: str, strength: float, seed: int) -> StreamEngine:
    engine = StreamEngine(pipe, strength_to_t_index_list(strength, 1), SIZE, SIZE, cfg_type="none")
    engine.prepare(prompt, seed=seed)
    return engine


def test_osc_changes_show_within_two_frames(tiny_pipe):
    values = {"prompt": "a cat", "strength": 0.4, "seed": 2, "transition": 0.0, "slew": 0.0}
    store = ParamStore(values)
    engine = make_engine(tiny_pipe, "a cat", 0.4, 2)
    source = TestPatternSource(96, 80, fps=8)
    sink = RecordingSink(SIZE, SIZE)
    arrivals: list[tuple[str, int]] = []
    with sink.start(), make_backend("eager", engine) as backend, Controller(engine, store) as ctrl, source.start():
        runner = Runner(source, backend, [sink], width=SIZE, height=SIZE, controller=ctrl)
        store.subscribe(lambda name, value: arrivals.append((name, runner.stats.frames)))
        loop = threading.Thread(target=runner.run, name="test-runner")
        loop.start()
        try:
            with (
                OscServer(store, port=0, status=runner.status) as srv,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c,
            ):
                c.bind(("127.0.0.1", 0))
                c.settimeout(10)
                wait_until(lambda: runner.stats.frames >= 3, timeout_s=60, what="3 frames")
                for address, value in [("prompt", "a dog in the snow"), ("strength", 0.9), ("seed", 77)]:
                    c.sendto(msg("/dreamcam/" + address, value), ("127.0.0.1", srv.port))
                    wait_until(lambda a=address: len(arrivals) and arrivals[-1][0] == a, timeout_s=60, what=f"{address} to arrive")
                    mark = arrivals[-1][1]
                    wait_until(lambda m=mark: len(sink.frames) >= m + 4, timeout_s=60, what="4 more frames")
                c.sendto(msg("/dreamcam/status"), ("127.0.0.1", srv.port))
                state = json.loads(OscMessage(c.recvfrom(65535)[0]).params[0])
        finally:
            runner.stop()
            loop.join(30)
    assert (state["prompt"], state["strength"], state["seed"]) == ("a dog in the snow", pytest.approx(0.9), 77)
    assert state["frames"] >= 12 and state["fps"] > 0 and "latency_ms" in state and "dropped" in state

    # which values each processed frame should have used, from the arrival marks
    steps = [dict(values)]
    for name, _ in arrivals:
        steps.append({**steps[-1], name: {"prompt": "a dog in the snow", "strength": 0.9, "seed": 77}[name]})
    refs: dict[tuple, StreamEngine] = {}

    def expected(k: int, index: int) -> np.ndarray:
        v = steps[k]
        key = (v["prompt"], v["strength"], v["seed"])
        if key not in refs:
            refs[key] = make_engine(tiny_pipe, *key)
        return refs[key].img2img(fit(source.pattern(index), SIZE, SIZE))

    for k, (name, mark) in enumerate(arrivals, start=1):
        first_new = None
        for seq in range(mark, min(mark + 4, len(sink.frames))):
            index, out = sink.frames[seq]
            if np.array_equal(out, expected(k, index)):
                first_new = seq if first_new is None else first_new
            else:
                assert first_new is None, f"{name}: frame {seq} fell back to old values"
                assert np.array_equal(out, expected(k - 1, index)), f"{name}: frame {seq} matches neither"
        assert first_new is not None and first_new <= mark + 2, (
            f"{name} arrived after frame {mark}, shown at {first_new}"
        )
        index, _ = sink.frames[first_new]
        assert not np.array_equal(expected(k, index), expected(k - 1, index))  # the change is visible
