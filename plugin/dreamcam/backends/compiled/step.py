"""The device-side frame step shared by the compiled and TensorRT backends.

`DeviceFrameStep` runs uint8 frame -> float -> engine.frame_step -> uint8 entirely on the
engine's device, reading and writing only buffers allocated once, so the whole step can be
captured in a CUDA graph. `swap_modules` lets a backend replace the engine's UNet and VAE calls
(by compiled or TensorRT ones) without touching the pipeline's shared modules.

`GraphedStep` runs that step two frames deep (`submit` / `collect`): each frame goes through
one of two slots of buffers, and three CUDA streams overlap the upload of frame N+1 (copy
stream), the compute of frame N (the step's own stream: framing on the device, graph replay)
and the download of frame N-1 (download stream). Frames run in submission order on the one
compute stream, so the stream batch carries its state exactly as in a synchronous loop.
`FramePipeline` hands that API on to the backends that own a `GraphedStep`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dreamcam.backends.inputs import DEPTH, check_frame, check_room, check_source_frame
from dreamcam.engine.framing import fit_torch
from dreamcam.engine.stream import StreamEngine, to_model_input, to_uint8
from dreamcam.errors import ConfigError


class TinyVaeCalls:
    """Stands in for an `AutoencoderTiny` in the engine with other encoder/decoder callables.

    encode: float (F, 3, H, W) in [-1, 1] -> latents (F, 4, H/8, W/8) (unscaled);
    decode: unscaled latents -> float (F, 3, H, W). Same contract as AutoencoderTiny's.
    """

    def __init__(self, vae: Any, encoder: Callable, decoder: Callable) -> None:
        self.dtype = vae.dtype
        self.config = vae.config
        self._encoder, self._decoder = encoder, decoder

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latents=self._encoder(x))

    def decode(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        return (self._decoder(latents),)


def check_capturable(engine: StreamEngine, backend: str) -> None:
    """The frame step reads only pre-allocated tensors and draws no host-side random numbers."""
    if not getattr(engine, "prepared", False):
        raise ConfigError(f"the {backend} backend needs a prepared engine: call engine.prepare(prompt) first")
    if not engine.use_denoising_batch:
        raise ConfigError(
            f"the {backend} backend runs the stream batch; use_denoising_batch=False draws fresh noise on the "
            "host every step: use --backend eager for it"
        )
    if engine.similarity_filter is not None:
        raise ConfigError(f"the similarity filter needs a host decision per frame: disable it or use --backend eager "
                          f"(the {backend} backend runs every frame)")
    vae = engine.vae
    if not (hasattr(vae, "encoder") and hasattr(vae, "decoder") and vae.__class__.__name__ == "AutoencoderTiny"):
        raise ConfigError(
            f"the {backend} backend needs a tiny VAE (TAESD, AutoencoderTiny); got {vae.__class__.__name__}: "
            "load the model with a tiny VAE or use --backend eager"
        )


@contextlib.contextmanager
def swap_modules(engine: StreamEngine, unet: Callable, vae: Any) -> Iterator[None]:
    """Point the engine at other UNet / VAE callables; the originals come back on exit."""
    old = engine.unet, engine.vae
    engine.unet, engine.vae = unet, vae
    try:
        yield
    finally:
        engine.unet, engine.vae = old


class DeviceFrameStep:
    """uint8 frames in a device buffer -> uint8 frames in a device buffer, via engine.frame_step.

    The conversions are `engine.img2img`'s own (`to_model_input`, `to_uint8`), so the result
    equals the eager backend's.
    """

    def __init__(self, engine: StreamEngine) -> None:
        f = engine.frame_buffer_size
        shape = (f, engine.height, engine.width, 3)
        self.engine = engine
        self.frames_in = torch.zeros(shape, dtype=torch.uint8, device=engine.device)
        self.frames_out = torch.zeros(shape, dtype=torch.uint8, device=engine.device)

    def model_input(self) -> torch.Tensor:
        """frames_in as the model takes it: float (F, 3, H, W) in [-1, 1], a channels-last view."""
        return to_model_input(self.frames_in, self.engine.device, self.engine.dtype)

    @torch.no_grad()
    def __call__(self) -> None:
        self.frames_out.copy_(to_uint8(self.engine.frame_step(self.model_input())))


def capture_graph(fn: Callable[[], Any], stream: torch.cuda.Stream | None = None) -> torch.cuda.CUDAGraph:
    """fn's kernels captured in a CUDA graph on `stream` (torch's default side stream if None); fn
    must have run (warmed up, compiled) before: a capture records, it does not run."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    return graph


class StateSnapshot:
    """Copies of the engine's carried state (`engine.carried_state()`: latents in flight, residual
    and init noise; `engine.attention_state()`: the cached-attention bank and its counters, when
    on), to undo warm-up frames."""

    def __init__(self, engine: StreamEngine) -> None:
        control = getattr(engine, "control", None)  # the ControlNets' control images in flight
        state = [*engine.carried_state(), *engine.attention_state(), *(control.state() if control is not None else [])]
        self._pairs = [(t, t.clone()) for t in state]

    def restore(self) -> None:
        for live, saved in self._pairs:
            live.copy_(saved)


class Slot:
    """One frame's buffers between submit and collect, and the events that order its copies.

    raw: the captured frame, host (pinned on CUDA) and device, re-allocated when the capture
    size changes; out: the engine-size result, device and host (pinned on CUDA).
    """

    def __init__(self, step: DeviceFrameStep, cuda: bool) -> None:
        self.cuda, self.device = cuda, step.frames_out.device
        self.raw_host = self.raw_dev = None
        self.raw_np: np.ndarray | None = None
        self.out_dev = torch.empty_like(step.frames_out)
        self.out_host = torch.empty(step.frames_out.shape, dtype=torch.uint8, pin_memory=cuda)
        self.out_np = self.out_host.numpy()
        # uploaded (copy stream) -> computed (compute stream) -> downloaded (download stream)
        self.uploaded, self.computed, self.downloaded = (torch.cuda.Event() if cuda else None for _ in range(3))

    def hold(self, shape: tuple[int, ...], copy_stream: torch.cuda.Stream | None = None) -> None:
        """Raw buffers of `shape`. The slot is idle here (its last frame was collected, which
        waited for its download); the wait below only guards that before old buffers are freed.

        The device buffer is allocated on `copy_stream`, the stream that writes it: the caching
        allocator hands out a block freed on the allocating stream as soon as that stream's
        earlier work is queued, not done, so a block taken on the default stream could still be
        in use by default-stream work (setters, the prompt encoder) when the copy stream writes it."""
        if self.raw_np is not None and self.raw_np.shape == shape:
            return
        if self.downloaded is not None:
            self.downloaded.synchronize()
        self.raw_host = torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
        with on_stream(copy_stream):
            self.raw_dev = torch.empty(shape, dtype=torch.uint8, device=self.device)
        self.raw_np = self.raw_host.numpy()


def on_stream(stream: torch.cuda.Stream | None):
    """`stream` as the current CUDA stream for a block; no stream (a CPU engine): nothing changes."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


class GraphedStep:
    """The frame path the compiled and TensorRT backends share.

    A `DeviceFrameStep` run on its own CUDA stream: warm-up frames (compilation happens in the
    first), then optionally one CUDA-graph capture, then the engine's carried state is restored
    so the warm-up leaves no trace.

    `submit(frame, fit_mode)` takes a captured frame of any size and returns at once: the frame
    is copied into its slot's pinned buffer, uploaded on the copy stream, framed to the engine
    size on the compute stream (`engine.framing.fit_torch`; a plain copy when the size matches),
    run through the step, copied to the slot's device output and downloaded on the download
    stream. `collect()` waits for the oldest frame's download and returns a copy. At most
    `DEPTH` (2) frames are in flight. `fence()` orders the default stream (where the engine's
    setters run) after the frames submitted so far, so a new prompt, schedule or guidance never
    lands in a frame that is already running; it applies from the next submitted frame.

    On a CPU engine the same code runs with no stream, pinning, event or graph: every submit
    computes at once, so the slot logic, order and results are testable without a GPU.
    """

    slot_class = Slot  # a subclass's slots may carry more (StagedStep's hand-over buffers)

    def __init__(self, engine: StreamEngine, *, warmup: int = 1, cuda_graph: bool = True,
                 backend: str = "compiled") -> None:
        self.engine = engine
        # cached attention: the graph has the bank (all slots) if it is on now, else none (engine/attention.py)
        engine.hold_attention_for_graph(backend)
        self.step = DeviceFrameStep(engine)
        cuda = engine.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=engine.device) if cuda else None
        self.copy_stream = torch.cuda.Stream(device=engine.device) if cuda else None
        self.download_stream = torch.cuda.Stream(device=engine.device) if cuda else None
        self.overlaps = cuda  # submit returns before the frame is done (False: it computes at once)
        self._slots = [self.slot_class(self.step, cuda) for _ in range(DEPTH)]
        self._in_flight: deque[Slot] = deque()
        self._next = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        # latent feedback and the motion guard run every frame, whatever their knobs, so the step
        # captured now holds them and a knob change (a device tensor filled in place) needs no re-capture
        feedback = engine.latent_feedback
        feedback.in_graph = feedback.blocked is None

        snapshot = StateSnapshot(engine)
        with self._on_stream():
            for _ in range(max(1, warmup)):
                self.step()
        self._sync()
        self.warm_at = time.perf_counter()
        if cuda_graph and cuda:
            self.graph = capture_graph(self.step, self.stream)
            self._sync()
        snapshot.restore()
        if cuda:
            torch.cuda.synchronize(engine.device)

    @contextlib.contextmanager
    def _on_stream(self) -> Iterator[None]:
        if self.stream is None:
            yield
            return
        # setters ran on the default stream between frames: order them before this frame
        self.stream.wait_stream(torch.cuda.current_stream(self.engine.device))
        with torch.cuda.stream(self.stream):
            yield

    def _sync(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    @property
    def pending(self) -> int:
        """Frames submitted and not yet collected (0..2)."""
        return len(self._in_flight)

    def submit(self, frame: np.ndarray, fit_mode: str = "crop") -> None:
        """Queue a captured uint8 (h, w, 3) RGB frame of any size (or (F, h, w, 3)); framed to the
        engine size with `fit_mode` (crop, letterbox, stretch). Does not wait for the device."""
        self._enqueue(check_source_frame(self.engine, frame, fit_mode), fit_mode)

    def _upload(self, frames: np.ndarray) -> Slot:
        """Take the next slot for a checked (F, h, w, 3) uint8 array and upload it on the copy
        stream (overlapping the compute of the frame ahead); returns the slot."""
        check_room(self.pending)
        slot = self._slots[self._next]
        slot.hold(frames.shape, self.copy_stream)
        np.copyto(slot.raw_np, frames)
        with on_stream(self.copy_stream):
            slot.raw_dev.copy_(slot.raw_host, non_blocking=True)
            if slot.uploaded is not None:
                slot.uploaded.record()
        return slot

    def _download(self, slot: Slot, ready: torch.cuda.Event | None) -> None:
        """Download the slot's result on its own stream once `ready` (overlapping the compute of
        the next frame), and count the frame as in flight."""
        if self.download_stream is not None:
            self.download_stream.wait_event(ready)
        with on_stream(self.download_stream):
            slot.out_host.copy_(slot.out_dev, non_blocking=True)
            if slot.downloaded is not None:
                slot.downloaded.record()
        self._in_flight.append(slot)
        self._next = (self._next + 1) % DEPTH

    def _lane(self, k: int) -> tuple[torch.cuda.Stream | None, DeviceFrameStep, Callable[[], Any]]:
        """The compute stream, step buffers and runner (graph replay or the step) of slot k's frame:
        here one lane for both slots (ParallelStep gives each slot its own)."""
        return self.stream, self.step, (self.graph.replay if self.graph is not None else self.step)

    def _enqueue(self, frames: np.ndarray, fit_mode: str) -> None:
        """`submit` for a checked (F, h, w, 3) uint8 array."""
        stream, step, run = self._lane(self._next)
        slot = self._upload(frames)  # 1. upload on the copy stream
        # 2. Compute, after the upload and after the setters issued so far on the default stream
        e = self.engine
        if stream is not None:
            stream.wait_event(slot.uploaded)
            stream.wait_stream(torch.cuda.current_stream(e.device))
        with on_stream(stream):
            for i in range(e.frame_buffer_size):
                step.frames_in[i].copy_(fit_torch(slot.raw_dev[i], e.width, e.height, fit_mode))
            e.feed_control(step.model_input())  # control images: outside the graph, which reads them
            run()
            slot.out_dev.copy_(step.frames_out)
            if slot.computed is not None:
                slot.computed.record()
        self._download(slot, slot.computed)  # 3. download on its own stream

    def collect(self) -> np.ndarray:
        """The oldest submitted frame's result, uint8 (H, W, 3) (or (F, H, W, 3)) at the engine
        size, a copy; waits for its download (the only host wait of the path)."""
        if not self._in_flight:
            raise RuntimeError("no frame in flight: submit(frame) before collect()")
        slot = self._in_flight.popleft()
        if slot.downloaded is not None:
            slot.downloaded.synchronize()
        out = slot.out_np.copy()
        return out[0] if self.engine.frame_buffer_size == 1 else out

    def fence(self) -> None:
        """Make the default stream wait for the frames submitted so far (no host wait): a setter
        issued after this cannot change a tensor a running frame still reads."""
        if self.stream is not None:
            torch.cuda.current_stream(self.engine.device).wait_stream(self.stream)

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size (or (F, H, W, 3)) -> the same shape; waits."""
        frames = check_frame(self.engine, frame)
        if self.pending:
            raise RuntimeError(f"{self.pending} frames are in flight: collect() them before process()")
        self._enqueue(frames, "crop")  # already at the engine size: framing is a plain copy
        return self.collect()

    def close(self) -> None:
        if self.stream is not None:
            torch.cuda.synchronize(self.engine.device)
        self._in_flight.clear()
        self.graph = None
        self.engine.latent_feedback.in_graph = False  # the engine alone skips them again when off
        self.engine.release_attention_from_graph()


class FramePipeline:
    """The backend API (process, submit / collect / fence / pending / overlaps, close, context
    manager) of a backend that runs a `GraphedStep` in `self._run` (see GraphedStep); every call
    is refused once the backend is closed (`self._closed`). A backend puts back what it swapped
    into the engine in `_release`, which `close` calls once."""

    name = "backend"
    _run: GraphedStep
    _closed: bool

    def _open_run(self) -> GraphedStep:
        if self._closed:
            raise RuntimeError(f"the {self.name} backend is closed")
        return self._run

    def submit(self, frame: np.ndarray, fit_mode: str = "crop") -> None:
        """uint8 (h, w, 3) RGB of any size, framed to the engine size on the device; no wait."""
        self._open_run().submit(frame, fit_mode)

    def collect(self) -> np.ndarray:
        """The oldest submitted frame's result, uint8 (H, W, 3) at the engine size."""
        return self._open_run().collect()

    def fence(self) -> None:
        """Setters issued after this apply from the next submitted frame (no host wait)."""
        self._open_run().fence()

    @property
    def pending(self) -> int:
        return self._run.pending

    @property
    def overlaps(self) -> bool:
        return self._run.overlaps

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size (or (F, H, W, 3)) -> the same shape; waits."""
        return self._open_run().process(frame)

    def _release(self) -> None:
        """What the backend undoes on close, after the frame path is closed (default: nothing)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run.close()
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
