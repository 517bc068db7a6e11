"""`dreamcam bench --profile N`: where a frame's time goes, by op or kernel (torch.profiler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def profile_frames(process: Callable, frames: list, n: int, device: str, top: int = 15) -> list[dict[str, Any]]:
    """Where a frame's time goes: the `top` ops/kernels by self time (device time on CUDA),
    in milliseconds per frame (per call of F frames with --frame-buffer F) and as a share of all
    self time over `n` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(n):
            process(frames[i % len(frames)])
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "name": e.key[:100],
            "ms_per_frame": round(getattr(e, key) / 1000.0 / n, 4),
            "share": round(getattr(e, key) / total, 4),
            "calls_per_frame": round(e.count / n, 2),
        }
        for e in events[:top]
    ]


@torch.no_grad()
def stage_times(engine: Any, n: int = 20) -> dict[str, float]:
    """Milliseconds per call of each stage of the frame step, run one by one outside any CUDA graph
    with the modules the backend runs (compiled ones while a compiled backend is open): TAESD
    encode, the denoising step (UNet stream batch + RCFG + LCM update) and TAESD decode, each
    timed over `n` calls after one untimed call (CUDA events on a GPU, wall clock on a CPU).
    The engine's carried state is restored afterwards."""
    import time

    from dreamcam.backends.step import StateSnapshot

    f, dev = engine.frame_buffer_size, engine.device
    # laid out as the frame step makes it (a permuted (F, H, W, 3) frame): a compiled encoder
    # guards on strides, so an NCHW-contiguous input would recompile it and time other kernels
    x = torch.rand((f, engine.height, engine.width, 3), device=dev).mul_(2).sub_(1).to(engine.dtype)
    x = x.permute(0, 3, 1, 2)
    snapshot = StateSnapshot(engine)
    cuda = dev.type == "cuda"
    lat = engine.encode_image(x)
    x0 = engine.predict_x0_batch(lat)
    stages = {"encode": lambda: engine.encode_image(x), "denoise": lambda: engine.predict_x0_batch(lat),
              "decode": lambda: engine.decode_image(x0)}
    out: dict[str, float] = {}
    for name, fn in stages.items():
        fn()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / n
        else:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            ms = (time.perf_counter() - t0) * 1000.0 / n
        out[f"{name}_ms"] = round(ms, 4)
    out["sum_ms"] = round(sum(out.values()), 4)
    snapshot.restore()
    return out
