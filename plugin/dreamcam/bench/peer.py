"""The peer side of `dreamcam bench --peer`: StreamDiffusion 0.1.1 on the same modules.

The peer is driven the way its own `__call__` does it: its VaeImageProcessor pre-processing of
PIL images, encode_image, predict_x0_batch, decode_image, and its post-processing to uint8.
With the eager backend both sides are timed on alternate frames (`bench_interleaved`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch

from dreamcam.backends import make_backend
from dreamcam.bench.extras import time_extras
from dreamcam.bench.timing import make_engine, summarize
from dreamcam.errors import ConfigError
from dreamcam.models.pipelines import is_sdxl


class PeerRunner:
    """StreamDiffusion 0.1.1 driven host uint8 -> host uint8, as its `__call__` does it.

    process: uint8 (H, W, 3), or (F, H, W, 3) with frame_buffer_size F > 1 -> the same shape.
    """

    def __init__(self, pipe, cfg: dict[str, Any], args: argparse.Namespace) -> None:
        if is_sdxl(pipe):  # else it fails at its first UNet call, deep inside diffusers
            raise ConfigError("--peer cannot run an SDXL model: StreamDiffusion 0.1.1 never passes SDXL's added "
                              "conditioning (pooled text embeddings, time ids) to the UNet; drop --peer")
        try:
            from streamdiffusion import StreamDiffusion  # lazy: an optional peer, installed only to compare
        except ImportError as e:
            raise ConfigError("--peer needs StreamDiffusion: pip install --no-deps streamdiffusion==0.1.1") from e
        self.frames = args.frame_buffer
        steps = len(cfg["t_index_list"])
        if self.frames > 1 and (steps > 1 or args.cfg_type == "initialize"):
            # its c_skip / c_out hold one row per step, not per step and frame, and its "initialize"
            # batch is one row short: both fail with a shape error
            raise ConfigError(f"--peer with --frame-buffer {self.frames} needs one step and --cfg-type none, self or "
                              f"full: StreamDiffusion 0.1.1 cannot run {steps} step(s) with cfg {args.cfg_type} and "
                              "frame_buffer_size > 1; drop --peer or use one step (e.g. --t-index-list 35)")
        self.peer = StreamDiffusion(pipe, cfg["t_index_list"], torch_dtype=cfg["dtype"], width=args.width,
                                    height=args.height, cfg_type=args.cfg_type, frame_buffer_size=self.frames)
        self.peer.prepare("a photo of a cat", num_inference_steps=50, guidance_scale=args.guidance,
                          generator=torch.Generator(), seed=args.seed)

    @torch.no_grad()
    def process(self, frame: np.ndarray) -> np.ndarray:
        p = self.peer
        images = [PIL.Image.fromarray(f) for f in (frame if self.frames > 1 else [frame])]
        x = p.image_processor.preprocess(images, p.height, p.width).to(device=p.device, dtype=p.dtype)
        y = p.decode_image(p.predict_x0_batch(p.encode_image(x))).detach().clone()
        out = (p.image_processor.postprocess(y, output_type="np") * 255).round().astype(np.uint8)
        return out if self.frames > 1 else out[0]


def _timed_start(make: Callable[[], Any], first_frame: np.ndarray) -> tuple[Any, float]:
    t0 = time.perf_counter()
    obj = make()
    obj.process(first_frame)
    return obj, round(time.perf_counter() - t0, 2)


def bench_interleaved(args, cfg, pipe, frames, result) -> dict[str, Any]:
    """Peer and eager dreamcam timed on alternate calls (which goes first alternates too)."""
    peer, peer_start = _timed_start(lambda: PeerRunner(pipe, cfg, args), frames[0])
    backend, dc_start = _timed_start(lambda: make_backend(args.backend, make_engine(pipe, cfg, args)), frames[0])
    ms: dict[str, list[float]] = {"peer": [], "dreamcam": []}
    wall = {"peer": 0.0, "dreamcam": 0.0}
    sides = [("peer", peer.process), ("dreamcam", backend.process)]
    warmup, calls = args.warmup, max(1, args.frames // args.frame_buffer)
    with backend:
        for i in range(warmup + calls):
            for name, process in sides if i % 2 else sides[::-1]:
                t0 = time.perf_counter()
                process(frames[i % len(frames)])
                dt = time.perf_counter() - t0
                if i >= warmup:
                    ms[name].append(dt * 1e3)
                    wall[name] += dt
        f = args.frame_buffer
        result["peer"] = dict(summarize(ms["peer"], wall["peer"], f), startup_s=peer_start, gpu_mem_peak_mib=None)
        result["dreamcam"] = dict(summarize(ms["dreamcam"], wall["dreamcam"], f), startup_s=dc_start,
                                  gpu_mem_peak_mib=None)
        time_extras(args, backend, frames, result, result["device"])  # --profile, --loop, as without --peer
    result["backend"] = backend.name
    result["timing"] = "interleaved"
    result["ratio_fps"] = round(result["dreamcam"]["fps"] / result["peer"]["fps"], 3)
    result["ratio_p50"] = round(result["peer"]["p50_ms"] / result["dreamcam"]["p50_ms"], 3)
    return result
