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


def _graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured in a CUDA graph of its own (warmed up on a side stream first): its replay costs
    the stage's GPU time without the per-kernel launch overhead a frame's single graph removes."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


@torch.no_grad()
def stage_times(engine: Any, n: int = 20) -> dict[str, Any]:
    """Milliseconds per call of each stage of the frame step with the modules the backend runs
    (compiled ones while a compiled backend is open): TAESD encode, the denoising step (UNet
    stream batch + RCFG + LCM update) and TAESD decode, each timed alone over `n` calls after one
    untimed call. On a GPU each stage is captured in a CUDA graph of its own and replayed, timed
    with CUDA events, so the figures are GPU time as the frame's graph spends it (`graphs`: True;
    False if a stage could not be captured and ran kernel by kernel); on a CPU, wall clock.
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
    out: dict[str, Any] = {}
    graphs = cuda
    for name, fn in stages.items():
        fn()
        if cuda:
            try:
                fn = _graphed(fn)
            except RuntimeError as e:  # a stage that cannot be captured: time its kernels as launched
                graphs = False
                out[f"{name}_graph_error"] = str(e).splitlines()[0][:200]
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
    out["sum_ms"] = round(sum(v for k, v in out.items() if k.endswith("_ms")), 4)
    if cuda:
        out["graphs"] = graphs
    snapshot.restore()
    return out
