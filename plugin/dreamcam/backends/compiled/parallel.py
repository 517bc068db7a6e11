"""`ParallelStep`: the two frames in flight run side by side, each on a compute stream of its own.

`GraphedStep` runs frames one after another on one compute stream because the stream batch
carries state from frame to frame (latents in flight, RCFG residual noise). With one denoising
step and `--cfg none` or `full` (sd-turbo's usual set-up) it carries none: `frame_step` writes
no engine tensor, each frame reads only the prompt, schedule and noise tensors. Then frame N+1
need not wait for frame N, and the UNet at batch 1, which keeps an H100 far from its peak
(docs/performance.md: two frames in one batch give 1.33x the frames per second of one), can run
two frames at once on two streams.

Each slot gets its own `DeviceFrameStep` buffers, compute stream and CUDA graph (so its own
pool of intermediate tensors: the two graphs never share memory while both run). A slot is
reused only after `collect()` waited for its download, and its stream runs its frames in order.
Setters: a slot's stream waits for the default stream at every submit, and `fence()` makes the
default stream wait for both compute streams. Results are exactly GraphedStep's
(tests/backends/test_parallel_step.py).

Smoothing and latent feedback (`smoothing`, `feedback`, `stability`) make each frame start from the one before, so here
they are held at 0, with one warning line (`LatentFeedback.block`).

Compiled backend only: a TensorRT execution context is bound to one set of buffers, so two
frames cannot share one. On an H200 (docs/performance.md, the 18:10 UTC run): 211 fps two deep against 180 for
GraphedStep, 204 in the live loop against 178 (218 and 209 with `--fuse-qkv`); one frame at a time,
0.15-0.35 ms slower, so it is a flag, not the default (dreamcam/runtime/pace.py points to it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from dreamcam.backends.compiled.step import DeviceFrameStep, GraphedStep, capture_graph, on_stream
from dreamcam.backends.inputs import DEPTH
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError


def carries_state(engine: StreamEngine) -> str | None:
    """Why frames of this engine depend on the frames before them, or None where they do not."""
    if not engine.use_denoising_batch:
        return "use_denoising_batch=False draws fresh noise for every frame"
    if engine.denoising_steps_num > 1:
        return f"{engine.denoising_steps_num} steps keep each frame's latents in the stream batch for the next"
    if engine.cfg_type in ("self", "initialize"):
        return f"--cfg {engine.cfg_type} carries its residual noise to the next frame"
    if getattr(engine, "attention_active", False):
        return "cached attention (--attn-bank) carries its feature bank to the next frame"
    return None


def check_parallel(engine: StreamEngine) -> None:
    """ConfigError, saying what to change, where two frames cannot run at once."""
    why = carries_state(engine)
    if why is not None:
        raise ConfigError(f"--parallel-frames runs two frames at once, which needs frames that carry no state: "
                          f"{why}. Use 1 step with --cfg none or full, or drop --parallel-frames")


class ParallelStep(GraphedStep):
    """GraphedStep's API (submit / collect / fence / process / close), slot k's frames on stream k.

    Args as GraphedStep. Refuses (ConfigError) an engine whose frames carry state. On a CPU
    engine every submit computes at once, as GraphedStep's does."""

    def __init__(self, engine: StreamEngine, *, warmup: int = 1, cuda_graph: bool = True) -> None:
        check_parallel(engine)
        # feedback would make frame N+1 read frame N's latent: it falls back to 0 (said once)
        engine.latent_feedback.block("--parallel-frames runs two frames side by side, so no frame starts from "
                                     "the one before; drop --parallel-frames to use smoothing / feedback / stability")
        super().__init__(engine, warmup=warmup, cuda_graph=False)  # warm-up (compiles) on slot 0's stream
        cuda = engine.device.type == "cuda"
        self.steps = [self.step] + [DeviceFrameStep(engine) for _ in range(DEPTH - 1)]
        self.streams = [self.stream] + [torch.cuda.Stream(device=engine.device) if cuda else None
                                        for _ in range(DEPTH - 1)]
        for step, stream in zip(self.steps[1:], self.streams[1:]):  # same layouts: no recompile
            if stream is not None:  # after slot 0's warm-up and the zero-fill of this slot's buffers
                stream.wait_stream(self.stream)
                stream.wait_stream(torch.cuda.current_stream(engine.device))
            with on_stream(stream):
                step()
        self._sync()
        self.warm_at = time.perf_counter()
        self.graphs: list[torch.cuda.CUDAGraph] | None = None
        self._runs = list(self.steps)  # what computes slot k's frame: its graph's replay, or its step
        if cuda_graph and cuda:
            self.graphs = [capture_graph(step, stream) for step, stream in zip(self.steps, self.streams)]
            self._runs = [g.replay for g in self.graphs]
            self._sync()
            self.graph = self.graphs[0]  # callers of GraphedStep check that a graph was captured
        if cuda:
            torch.cuda.synchronize(engine.device)

    def _sync(self) -> None:
        for s in getattr(self, "streams", [self.stream]):
            if s is not None:
                s.synchronize()

    def _lane(self, k: int) -> tuple[torch.cuda.Stream | None, DeviceFrameStep, Callable[[], Any]]:
        return self.streams[k], self.steps[k], self._runs[k]

    def fence(self) -> None:
        """The default stream waits for both compute streams (no host wait)."""
        if self.stream is None:
            return
        default = torch.cuda.current_stream(self.engine.device)
        for s in self.streams:
            default.wait_stream(s)

    def close(self) -> None:
        super().close()
        self.graphs, self._runs = None, []  # frees the graphs
        self.engine.latent_feedback.blocked = None
