"""FP8 linear layers for the UNet's transformer blocks (`--fp8-linear`, compiled backend).

The attention and feed-forward projections of every `Transformer2DModel` run as FP8 (e4m3)
matmuls (`torch._scaled_mm`, Hopper and Ada tensor cores) with fp16 output. Scales are
per tensor and *static*: the weights' from their own largest value, the activations' from a
calibration pass at start (a few frames through the eager step, the largest input each layer
saw, times a headroom `MARGIN`). Static scales keep the step free of the extra reduction kernel
a per-frame scale would need; an input beyond the calibrated range saturates at the largest
FP8 value instead of overflowing.

Left in fp16: the cross-attention key/value projections (their input is the prompt's text
embedding, 77 tokens: nothing to win, and a prompt change must never saturate), the timestep
embedding and everything outside the transformer blocks (convolutions: PyTorch has no FP8
convolution).

Numerics change (e4m3 keeps 3 mantissa bits of each input); on random weights the frames differ
from fp16 by a few uint8 levels (tests/test_fp8.py). The weights are read once at start: a LoRA
or weight change afterwards is not seen. The layers go back to the original `nn.Linear` on close.

Measured on an H100 (docs/performance.md): no gain at sd-turbo 512 or sd15 4 steps. Each layer's
quantizing kernel costs about what the FP8 tensor cores save at these sizes; TensorRT folds that
quantization into the previous kernel, which Inductor does not do across a matmul.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from dreamcam.backends.compiled.step import DeviceFrameStep, StateSnapshot
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
MARGIN = 2.0  # calibrated activation range x this, so brighter frames or other prompts still fit
CONTAINERS = ("Transformer2DModel",)
TEXT_INPUT = ("attn2.to_k", "attn2.to_v", "attn2.to_kv")  # their input is the prompt, not the image


def check_fp8_device(device: torch.device) -> None:
    """FP8 matmuls need compute capability 8.9+ on CUDA (the CPU runs them too: slowly, for tests)."""
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        if cap < (8, 9):
            name = torch.cuda.get_device_name(device)
            raise DeviceError(f"--fp8-linear needs an Ada or Hopper GPU (compute capability 8.9+); {name} is "
                              f"{cap[0]}.{cap[1]}: drop --fp8-linear")


class Fp8Linear(nn.Module):
    """An `nn.Linear` as an FP8 matmul with static per-tensor scales.

    Starts observing: it runs the original layer and records the largest |input| (`amax`).
    `freeze()` fixes the scales and quantizes the weight; from then on the forward is
    quantize (x / scale, saturate, cast) -> `_scaled_mm` -> fp16/fp32 output with bias.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.observing = True
        dev = linear.weight.device
        self.register_buffer("amax", torch.zeros((), dtype=torch.float32, device=dev))
        self.register_buffer("in_scale", torch.ones((), dtype=torch.float32, device=dev))
        self.register_buffer("w_scale", torch.ones((), dtype=torch.float32, device=dev))
        self.register_buffer("w_fp8", torch.empty(0, dtype=FP8, device=dev))

    @torch.no_grad()
    def freeze(self, margin: float = MARGIN) -> None:
        w = self.linear.weight.detach().float()
        w_amax = w.abs().amax().clamp(min=1e-12)
        self.w_scale.fill_(float(w_amax) / FP8_MAX)
        self.w_fp8 = (w / self.w_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).contiguous()  # (out, in), row-major
        self.in_scale.fill_(max(float(self.amax) * margin, 1e-6) / FP8_MAX)
        self.observing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            with torch.no_grad():
                torch.maximum(self.amax, x.detach().abs().amax().float(), out=self.amax)
            return self.linear(x)
        lead, lin = x.shape[:-1], self.linear
        # row-major for _scaled_mm: SD2's proj_in gets a permuted (column-major) view of the features
        q = (x.reshape(-1, lin.in_features).float() / self.in_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).contiguous()
        bias = lin.bias
        y = torch._scaled_mm(q, self.w_fp8.t(), scale_a=self.in_scale, scale_b=self.w_scale,
                             bias=None if bias is None else bias.to(x.dtype), out_dtype=x.dtype,
                             use_fast_accum=True)  # inference: Hopper's faster FP8 accumulation
        return y.reshape(*lead, lin.out_features)


def _eligible(name: str, module: nn.Module) -> bool:
    return (type(module) is nn.Linear and not name.endswith(TEXT_INPUT)
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


class Fp8Linears:
    """Swaps the eligible linear layers of `unet`'s transformer blocks for `Fp8Linear` in place
    (observing); `calibrate(engine)` then freezes them; `close()` puts the originals back."""

    def __init__(self, unet: nn.Module) -> None:
        self._swapped: list[tuple[nn.Module, str, nn.Linear]] = []
        for container in [m for m in unet.modules() if type(m).__name__ in CONTAINERS]:
            for full, child in list(container.named_modules()):
                if _eligible(full, child):
                    parent_name, _, name = full.rpartition(".")
                    parent = container.get_submodule(parent_name)
                    setattr(parent, name, Fp8Linear(child))
                    self._swapped.append((parent, name, child))
        if not self._swapped:
            raise ConfigError("--fp8-linear found no linear layer in the UNet's transformer blocks (this model has "
                              "none to convert): drop --fp8-linear")

    @property
    def layers(self) -> list[Fp8Linear]:
        return [getattr(parent, name) for parent, name, _ in self._swapped]

    @torch.no_grad()
    def calibrate(self, engine: StreamEngine, frames: int | None = None, seed: int = 0) -> None:
        """Run `frames` (default: stream-batch steps + 1, so every batch slot carries a real
        latent) random frames through the engine's eager frame step, recording each layer's input
        range, then freeze the scales; the engine's carried state is restored afterwards."""
        step = DeviceFrameStep(engine)
        snapshot = StateSnapshot(engine)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = frames or len(engine.t_index_list) + 1
        try:
            for _ in range(n):
                step.frames_in.copy_(torch.randint(0, 256, step.frames_in.shape, generator=gen, dtype=torch.uint8))
                step()
        finally:
            snapshot.restore()
        for layer in self.layers:
            layer.freeze()
        log.info("fp8 linears: %d layers calibrated on %d frames", len(self._swapped), n)

    def close(self) -> None:
        for parent, name, child in reversed(self._swapped):
            setattr(parent, name, child)
        self._swapped.clear()
