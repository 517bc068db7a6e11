"""The compiled backend: torch.compile'd UNet and tiny VAE, the whole frame step in one CUDA graph.

One `process(frame)` is: copy the frame into a pinned host buffer, upload it on the backend's
own CUDA stream, replay the captured graph (uint8 -> float, VAE encode, UNet stream batch, RCFG
and LCM step, VAE decode, float -> uint8), download into a pinned host buffer, wait. The graph
reads the engine's pre-allocated tensors (prompt embeddings, schedule, noise, guidance), so the
engine's setters (set_prompt, set_strength, set_guidance, set_delta, set_seed) take effect at
the next frame with no re-capture and no recompile.

The compile cache (Inductor's FX-graph and kernel caches) lives under `engines/torch_compile`,
so the second start of the same model and size skips most of the compile time.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch

from dreamcam.backends.step import FramePipeline, GraphedStep, TinyVaeCalls, check_capturable, swap_modules
from dreamcam.errors import DeviceError

log = logging.getLogger(__name__)


def use_compile_cache(path: str | os.PathLike | None = None) -> str:
    """Point Inductor's on-disk caches at `path` (default engines/torch_compile) unless the user
    already set TORCHINDUCTOR_CACHE_DIR; returns the folder used."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ or path is not None:
        from dreamcam.backends import engines_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path or engines_dir() / "torch_compile")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


class CompiledBackend(FramePipeline):
    """CUDA only. Args:
        engine: a prepared StreamEngine on a CUDA device (fp16 recommended), stream batch on,
            tiny VAE, similarity filter off.
        compile: torch.compile the UNet and VAE (default mode); False captures the eager kernels.
        cuda_graph: capture the frame step in a CUDA graph (False: run it step by step).
        warmup: frames run before capture (compilation happens in the first one).
        cache_dir: compile cache folder (default engines/torch_compile).
    """

    name = "compiled"

    def __init__(self, engine: Any, *, compile: bool = True, cuda_graph: bool = True, warmup: int = 3,
                 cache_dir: str | None = None) -> None:
        # 1. Check inputs
        if engine.device.type != "cuda":
            raise DeviceError(f"the compiled backend needs a CUDA device; the engine is on {engine.device}: "
                              "use --backend eager on a CPU")
        check_capturable(engine, self.name)
        self.engine = engine
        self._closed = False
        t0 = time.perf_counter()

        # 2. Kernels: fp16 weights in channels-last; convolutions autotuned once per shape
        torch.backends.cudnn.benchmark = True
        for module in (engine.unet, engine.vae):
            module.to(memory_format=torch.channels_last)
        unet, enc, dec = engine.unet, engine.vae.encoder, engine.vae.decoder
        if compile:
            self.cache_dir = use_compile_cache(cache_dir)
            unet, enc, dec = (torch.compile(m, dynamic=False) for m in (unet, enc, dec))
        self._swap = swap_modules(engine, unet, TinyVaeCalls(engine.vae, enc, dec))
        self._swap.__enter__()

        # 3. Warm up (compiles), capture, undo the warm-up frames' effect on the stream state
        self._run = GraphedStep(engine, warmup=warmup, cuda_graph=cuda_graph)
        self.compile_s = round(self._run.warm_at - t0, 2)
        self.startup_s = round(time.perf_counter() - t0, 2)
        log.info("compiled backend ready in %.1f s (compile+warm-up %.1f s, CUDA graph %s)",
                 self.startup_s, self.compile_s, "on" if cuda_graph else "off")

    def process(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the engine size -> uint8 (H, W, 3) RGB."""
        if self._closed:
            raise RuntimeError("the compiled backend is closed")
        return self._run.process(frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run.close()
        self._swap.__exit__(None, None, None)

    def __enter__(self) -> CompiledBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
