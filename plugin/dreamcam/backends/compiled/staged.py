"""`StagedStep`: the two-deep frame path with the frame step cut into three stages on three streams.

Measured on an H200 (docs/performance.md), sd-turbo at 512x512 spends 5.85 ms of GPU time a frame:
TAESD encode 0.69, the UNet at batch 1 4.41, TAESD decode 0.75; the UNet at batch 1 keeps the GPU
at under a quarter of its peak. `GraphedStep` runs a frame's whole step as one graph on one
stream, so frame N+1's encode waits for frame N's decode. Here each stage is a graph of its own
on a stream of its own:

    upload (copy stream) -> framing + encode (encode stream) -> denoise (compute stream)
        -> decode (decode stream) -> download (download stream)

so frame N+1's encode and frame N-1's decode can run beside frame N's UNet. Encode and decode
carry no state between frames and the denoising stage still runs frames one after another on one
stream, so every frame's result is exactly GraphedStep's (tests/backends/test_staged_step.py).

Each stage reads and writes its own static buffers (a CUDA graph replays fixed addresses); the
hand-over between stages is a copy into the frame's slot (a few tens of KB of latents), ordered
by events. A slot is reused only after `collect()` waited for its download, which follows its
decode, which follows its denoise, so no stage overwrites what another still reads.
Setters: the encode stream waits for the default stream at every submit (as the compute stream
does in GraphedStep), and `fence()` makes the default stream wait for the encode and compute
streams, the two that read the engine's schedule, noise and prompt tensors.

Measured on an H100 (docs/performance.md): two deep +1.9% at 512x512, +4.3% at 768x448, +5.8%
with --fuse-qkv; one frame at a time 2-6% slower (three launches and their events instead of one
graph) and the live loop at 512 3% slower, so it is an option (`--overlap-stages`), not the default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dreamcam.backends.compiled.step import DeviceFrameStep, GraphedStep, Slot, StateSnapshot, capture_graph, on_stream
from dreamcam.engine.framing import fit_torch
from dreamcam.engine.stream import StreamEngine, to_uint8


class _StageBuffers:
    """The static inputs and outputs of the three stages, shaped and strided as the whole frame
    step makes them (a compiled module guards on its inputs' strides)."""

    @torch.no_grad()
    def __init__(self, step: DeviceFrameStep) -> None:
        lat = step.engine.encode_image(step.model_input())
        x0 = step.engine.predict_x0_batch(lat)
        self.lat = torch.zeros_like(lat)  # encode's output
        self.lat_in = torch.zeros_like(lat)  # denoise's input
        self.x0 = torch.zeros_like(x0)  # denoise's output
        self.x0_in = torch.zeros_like(x0)  # decode's input


class _StagedSlot(Slot):
    """A slot plus the frame's hand-over between stages: encode's latents, denoise's output, and
    the events after encode and decode (allocated once the stage buffers' shapes are known)."""

    lat: torch.Tensor
    x0: torch.Tensor
    score: torch.Tensor  # the frame's motion score (latent feedback's motion guard), encode -> denoise
    encoded: torch.cuda.Event | None
    decoded: torch.cuda.Event | None


class StagedStep(GraphedStep):
    """GraphedStep's API (submit / collect / fence / process / close) with the stages overlapped.

    Args as GraphedStep. On a CPU engine the stages run one after another at submit, like
    GraphedStep's, so the order, buffers and results are testable without a GPU."""

    slot_class = _StagedSlot

    def __init__(self, engine: StreamEngine, *, warmup: int = 1, cuda_graph: bool = True) -> None:
        super().__init__(engine, warmup=warmup, cuda_graph=False)  # warm-up (compiles), streams, slots
        cuda = engine.device.type == "cuda"
        self.encode_stream = torch.cuda.Stream(device=engine.device) if cuda else None
        self.decode_stream = torch.cuda.Stream(device=engine.device) if cuda else None
        # the motion score is written by encode and read by denoise: frame N+1's encode runs beside
        # frame N's denoise, so each frame's score travels in its slot, as its latents do
        self._score_out, self._score_in = engine.latent_feedback.split_score()
        snapshot = StateSnapshot(engine)
        with on_stream(self.stream):
            self.buf = _StageBuffers(self.step)
        for slot in self._slots:  # the hand-over buffers between stages (_StagedSlot), and their events
            slot.lat = torch.zeros_like(self.buf.lat)
            slot.x0 = torch.zeros_like(self.buf.x0)
            slot.score = torch.zeros_like(self._score_out)
            slot.encoded, slot.decoded = (torch.cuda.Event() if cuda else None for _ in range(2))
        stages = ((self._encode, self.encode_stream), (self._denoise, self.stream), (self._decode, self.decode_stream))
        for fn, stream in stages:  # warm each stage alone as it will run (no recompile: same layouts)
            with on_stream(stream):
                fn()
        self._sync_all()
        self.warm_at = time.perf_counter()
        # what runs each stage at submit: its graph's replay, or the stage itself
        self.graphs: list[torch.cuda.CUDAGraph] | None = None
        self._stages: list[Callable[[], Any]] = [fn for fn, _ in stages]
        if cuda_graph and cuda:
            self.graphs = [capture_graph(fn, stream) for fn, stream in stages]
            self._stages = [g.replay for g in self.graphs]
            self._sync_all()
            self.graph = self.graphs[1]  # the UNet's: callers of GraphedStep check that a graph was captured
        snapshot.restore()
        if cuda:
            torch.cuda.synchronize(engine.device)

    # ------------------------------------------------------------------ the three stages

    @torch.no_grad()
    def _encode(self) -> None:
        self.buf.lat.copy_(self.engine.encode_image(self.step.model_input()))

    @torch.no_grad()
    def _denoise(self) -> None:
        self.buf.x0.copy_(self.engine.predict_x0_batch(self.buf.lat_in))

    @torch.no_grad()
    def _decode(self) -> None:
        self.step.frames_out.copy_(to_uint8(self.engine.decode_image(self.buf.x0_in)))

    def _sync_all(self) -> None:
        for s in (self.encode_stream, self.stream, self.decode_stream):
            if s is not None:
                s.synchronize()

    # ------------------------------------------------------------------ one frame through the stages

    def _enqueue(self, frames: np.ndarray, fit_mode: str) -> None:
        slot = self._upload(frames)  # 1. upload on the copy stream
        e = self.engine
        # 2. Framing and encode, after the upload and after the setters issued so far
        if self.encode_stream is not None:
            self.encode_stream.wait_event(slot.uploaded)
            self.encode_stream.wait_stream(torch.cuda.current_stream(e.device))
        with on_stream(self.encode_stream):
            for i in range(e.frame_buffer_size):
                self.step.frames_in[i].copy_(fit_torch(slot.raw_dev[i], e.width, e.height, fit_mode))
            self._stages[0]()
            slot.lat.copy_(self.buf.lat)
            slot.score.copy_(self._score_out)
            if slot.encoded is not None:
                slot.encoded.record()
        # 3. Denoise: frames in submission order on the one compute stream (the stream batch's state)
        if self.stream is not None:
            self.stream.wait_event(slot.encoded)
        with on_stream(self.stream):
            self.buf.lat_in.copy_(slot.lat)
            self._score_in.copy_(slot.score)
            self._stages[1]()
            slot.x0.copy_(self.buf.x0)
            if slot.computed is not None:
                slot.computed.record()
        # 4. Decode
        if self.decode_stream is not None:
            self.decode_stream.wait_event(slot.computed)
        with on_stream(self.decode_stream):
            self.buf.x0_in.copy_(slot.x0)
            self._stages[2]()
            slot.out_dev.copy_(self.step.frames_out)
            if slot.decoded is not None:
                slot.decoded.record()
        self._download(slot, slot.decoded)  # 5. download on its own stream

    def fence(self) -> None:
        """The default stream waits for the stages that read the engine's state (no host wait)."""
        if self.stream is not None:
            default = torch.cuda.current_stream(self.engine.device)
            default.wait_stream(self.encode_stream)
            default.wait_stream(self.stream)

    def close(self) -> None:
        super().close()
        self.graphs, self._stages = None, []  # frees the graphs
        feedback = self.engine.latent_feedback
        feedback.score_seen = feedback.score  # one buffer again: encode and denoise run in turn
