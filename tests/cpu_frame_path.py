"""The backends' frame path on a CPU engine, for tests that need no GPU: an engine with a set-up
that carries state from frame to frame, camera-like frames, a backend driven two deep as the
runner drives it, stand-in backends that log the runner's calls, and a compile counter."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from dreamcam import StreamEngine
from dreamcam.backends.compiled.step import FramePipeline, GraphedStep, TinyVaeCalls, swap_modules

SIZE = 64


def engine(pipe, *, frame_buffer_size: int = 1, device: str = "cpu", dtype=torch.float32) -> StreamEngine:
    e = StreamEngine(pipe, [20, 40], SIZE, SIZE, cfg_type="self", frame_buffer_size=frame_buffer_size,
                     device=device, dtype=dtype)
    e.prepare("a watercolor fox", guidance_scale=1.4, seed=3)
    return e


def camera(n: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """n distinct captured frames, frame i of size sizes[i % len(sizes)] (w, h): a gradient that
    shifts per frame plus noise, so framing and order both show in the output."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([x / w * 200 + 7 * i, y / h * 200, (x + y) / (w + h) * 255], -1) + rng.normal(0, 4, (h, w, 3))
        out.append(img.clip(0, 255).astype(np.uint8))
    return out


def pipelined(backend, frames, fit_mode="crop", changes=None) -> list[np.ndarray]:
    """Submit frame k+1 before collecting frame k, as the runner does when the engine is slower
    than the source. `changes[k]()` runs after frame k-1 is submitted and before frame k is, after
    a fence; as in the runner, frames with no change get no fence."""
    outs = []
    for k, f in enumerate(frames):
        if changes and k in changes:
            backend.fence()
            changes[k]()
        backend.submit(f, fit_mode)
        assert backend.pending == (1 if k == 0 else 2)
        if k:
            outs.append(backend.collect())
    outs.append(backend.collect())
    assert backend.pending == 0
    return outs


@contextlib.contextmanager
def counting_compiles(e):
    """The engine's UNet, TAESD encoder and decoder torch.compile'd with a backend that counts
    compilations (the counter is yielded); the engine's own modules come back on exit."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    unet = torch.compile(e.unet, backend=counter, dynamic=False)
    enc = torch.compile(e.vae.encoder, backend=counter, dynamic=False)
    dec = torch.compile(e.vae.decoder, backend=counter, dynamic=False)
    torch._dynamo.reset()
    with swap_modules(e, unet, TinyVaeCalls(e.vae, enc, dec)):
        yield counter


class LoggedGraphed(FramePipeline):
    """The compiled backend's frame path on a CPU engine, logging each call the runner makes and
    the milliseconds each frame spent inside submit and collect (`busy_ms`, in submit order)."""

    name = "cpu-graphed"

    def __init__(self, engine) -> None:
        self.engine, self._closed, self.calls, self.busy_ms = engine, False, [], []
        self._run = GraphedStep(engine, warmup=1)
        self._collected = 0

    def submit(self, frame, fit_mode="crop"):
        self.calls.append("submit")
        t0 = time.perf_counter()
        super().submit(frame, fit_mode)
        self.busy_ms.append((time.perf_counter() - t0) * 1e3)

    def collect(self):
        self.calls.append("collect")
        t0 = time.perf_counter()
        out = super().collect()
        self.busy_ms[self._collected] += (time.perf_counter() - t0) * 1e3
        self._collected += 1
        return out

    def fence(self):
        self.calls.append("fence")
        super().fence()

    def process(self, frame):
        self.calls.append("process")
        return self._run.process(frame)


class ProcessOnly:
    """A backend as the runner's oldest contract knows it: `process` and nothing else."""

    def __init__(self, engine):
        self.engine = engine

    def process(self, frame):
        return self.engine.img2img(frame)
