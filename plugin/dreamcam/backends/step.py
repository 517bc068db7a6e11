"""The device-side frame step shared by the compiled and TensorRT backends.

`DeviceFrameStep` runs uint8 frame -> float -> engine.frame_step -> uint8 entirely on the
engine's device, reading and writing only buffers allocated once, so the whole step can be
captured in a CUDA graph. `swap_modules` lets a backend replace the engine's UNet and VAE calls
(by compiled or TensorRT ones) without touching the pipeline's shared modules.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

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


def check_capturable(engine: Any, backend: str) -> None:
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
def swap_modules(engine: Any, unet: Callable, vae: Any) -> Iterator[None]:
    """Point the engine at other UNet / VAE callables; the originals come back on exit."""
    old = engine.unet, engine.vae
    engine.unet, engine.vae = unet, vae
    try:
        yield
    finally:
        engine.unet, engine.vae = old


class DeviceFrameStep:
    """uint8 frames in a device buffer -> uint8 frames in a device buffer, via engine.frame_step.

    The conversions are those of `engine.img2img` (x / 127.5 - 1 in the engine dtype; output
    (y + 1) * 127.5 clamped and rounded), so the result equals the eager backend's.
    """

    def __init__(self, engine: Any) -> None:
        f = engine.frame_buffer_size
        shape = (f, engine.height, engine.width, 3)
        self.engine = engine
        self.frames_in = torch.zeros(shape, dtype=torch.uint8, device=engine.device)
        self.frames_out = torch.zeros(shape, dtype=torch.uint8, device=engine.device)

    @torch.no_grad()
    def __call__(self) -> None:
        e = self.engine
        x = self.frames_in.permute(0, 3, 1, 2).to(e.dtype).div_(127.5).sub_(1.0)
        y = e.frame_step(x)
        self.frames_out.copy_(((y.float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1))


def check_frame(engine: Any, frame: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) frame (or (F, H, W, 3) with frame_buffer_size F > 1) -> (F, H, W, 3)."""
    f, h, w = engine.frame_buffer_size, engine.height, engine.width
    want = (h, w, 3) if f == 1 else (f, h, w, 3)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != want:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ConfigError(f"expected a uint8 numpy frame of shape {want}, got {got}")
    return frame.reshape(f, h, w, 3)


class StateSnapshot:
    """Copies of the engine's carried state (latents in flight, residual noise), to undo warm-up."""

    def __init__(self, engine: Any) -> None:
        self._pairs = [(t, t.clone()) for t in (engine._x_batch, engine.stock_noise, engine._init_noise)]

    def restore(self) -> None:
        for live, saved in self._pairs:
            live.copy_(saved)


class GraphedStep:
    """The frame path the compiled and TensorRT backends share.

    A `DeviceFrameStep` between pinned host buffers, run on its own CUDA stream: warm-up frames
    (compilation happens in the first), then optionally one CUDA-graph capture, then the engine's
    carried state is restored so the warm-up leaves no trace. `process` copies a frame in,
    replays (or runs) the step and copies the result out. On a CPU engine the same code runs with
    no stream, pinning or graph, so the path is testable without a GPU.
    """

    def __init__(self, engine: Any, *, warmup: int = 1, cuda_graph: bool = True) -> None:
        self.engine = engine
        self.step = DeviceFrameStep(engine)
        cuda = engine.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=engine.device) if cuda else None
        self._in_host = torch.empty(self.step.frames_in.shape, dtype=torch.uint8)
        self._out_host = torch.empty(self.step.frames_out.shape, dtype=torch.uint8)
        if cuda:
            self._in_host, self._out_host = self._in_host.pin_memory(), self._out_host.pin_memory()
        self._in_np, self._out_np = self._in_host.numpy(), self._out_host.numpy()
        self.graph: torch.cuda.CUDAGraph | None = None

        snapshot = StateSnapshot(engine)
        with self._on_stream():
            for _ in range(max(1, warmup)):
                self.step()
        self._sync()
        self.warm_at = time.perf_counter()
        if cuda_graph and cuda:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.step()
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

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size (or (F, H, W, 3)) -> the same shape."""
        np.copyto(self._in_np, check_frame(self.engine, frame))
        with self._on_stream():
            self.step.frames_in.copy_(self._in_host, non_blocking=True)
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
            self._out_host.copy_(self.step.frames_out, non_blocking=True)
        self._sync()
        out = self._out_np.copy()
        return out[0] if self.engine.frame_buffer_size == 1 else out

    def close(self) -> None:
        if self.stream is not None:
            torch.cuda.synchronize(self.engine.device)
        self.graph = None
