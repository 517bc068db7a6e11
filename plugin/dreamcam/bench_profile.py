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
