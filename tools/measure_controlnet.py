"""What a ControlNet costs per frame on the eager backend, and each preprocessor's cost.

    PYTHONPATH=plugin python tools/measure_controlnet.py --size 512 --frames 12

Prints median milliseconds per frame, measured interleaved in one process (frame by frame, each
set-up in turn, so load from other processes falls on all of them alike):

- the tiny model without ControlNet, with one tiny ControlNet at scale 1 (canny), and at scale 0;
- each preprocessor alone (canny, softedge, input, depth with the tiny random Depth Anything);
- preprocessing inline (in the frame step, before the UNet) against in a thread (a worker takes
  the newest frame through a LatestSlot and the frame step uses the newest finished control
  image: one frame old while the worker keeps up), for canny and softedge.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.engine.controlnet import ControlStack, ControlUnit
from dreamcam.engine.preprocessors import Canny, Depth, InputImage, SoftEdge, tiny_depth_model
from dreamcam.frames import LatestSlot
from dreamcam.models.controlnet import tiny_controlnet


class Threaded:
    """A preprocessor run on a worker thread: `__call__` hands the frame over (newest only) and
    returns the newest finished control image (waiting only for the very first)."""

    def __init__(self, inner) -> None:
        self.inner, self.slot, self.latest = inner, LatestSlot(), None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (x := self.slot.get()) is not None:
            self.latest = self.inner(x)
            self.ready.set()

    def __call__(self, x):
        self.slot.put(x.clone())
        self.ready.wait()
        return self.latest

    def close(self) -> None:
        self.slot.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = tiny_pipeline(0)
    net = tiny_controlnet(pipe.unet)
    s = a.size
    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, s, s, generator=g) * 2 - 1 for _ in range(4)]

    def engine(preps=None, scale=1.0):
        control = ControlStack([ControlUnit(net, preps, scale=scale)]) if preps else None
        e = StreamEngine(pipe, [30], s, s, cfg_type="none", control=control)
        e.prepare("a fox", seed=2)
        return e

    threaded = {"canny": Threaded(Canny()), "softedge": Threaded(SoftEdge())}
    setups = {
        "no ControlNet": engine(),
        "ControlNet canny, scale 1": engine({"canny": Canny()}),
        "ControlNet canny, scale 0": engine({"canny": Canny()}, 0.0),
        "ControlNet softedge, scale 1": engine({"softedge": SoftEdge()}),
        "ControlNet canny in a thread": engine({"canny": threaded["canny"]}),
        "ControlNet softedge in a thread": engine({"softedge": threaded["softedge"]}),
    }
    preps = {"canny": Canny(), "softedge": SoftEdge(), "input": InputImage(), "depth (tiny)": Depth(tiny_depth_model())}
    times: dict[str, list[float]] = {k: [] for k in [*setups, *(f"preprocessor {p}" for p in preps)]}
    with torch.no_grad():
        for i in range(a.frames + 2):
            x = frames[i % len(frames)]
            for name, e in setups.items():
                t = time.perf_counter()
                e.process(x)
                if i >= 2:
                    times[name].append((time.perf_counter() - t) * 1e3)
            for name, p in preps.items():
                t = time.perf_counter()
                p(x)
                if i >= 2:
                    times[f"preprocessor {name}"].append((time.perf_counter() - t) * 1e3)
    for t in threaded.values():
        t.close()
    print(f"tiny model, {s}x{s}, 1 step, cfg none, eager on CPU, {a.threads} torch threads, {a.frames} frames, median ms:")
    for name, ms in times.items():
        print(f"  {name:34s} {statistics.median(ms):8.1f} ms")


if __name__ == "__main__":
    main()
