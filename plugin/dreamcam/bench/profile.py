"""`dreamcam bench --profile N`: where a frame's time goes, by op or kernel (torch.profiler)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from dreamcam.backends.compiled.step import StateSnapshot, capture_graph


# op names -> the kind of work (first match wins); what no op claims is "other": on a GPU that is
# mostly Inductor's fused Triton kernels (GroupNorm, SiLU, residual adds, the scheduler's math)
KINDS = (("attention", ("attention", "sdpa")), ("convolution", ("conv",)),
         ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear")))


def profile_frames(process: Callable, frames: list, n: int, device: str, top: int = 15) -> dict[str, Any]:
    """Where a frame's time goes over `n` profiled calls: {"top": the `top` kernels (on a GPU; ops on
    a CPU) by self time, in milliseconds per frame (per call of F frames with --frame-buffer F) and
    as a share of all of it; "kinds": milliseconds per frame of convolution, matmul, attention and
    other work, and their total}."""
    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(n):
            process(frames[i % len(frames)])
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        kernel = cuda and str(getattr(e, "device_type", "")).endswith("CUDA")
        self_us = e.self_device_time_total if cuda else e.self_cpu_time_total
        rows.append((e.key, e.count, self_us, kernel))
    return summarize_profile(rows, n, cuda, top)


def summarize_profile(rows: list[tuple[str, int, float, bool]], n: int, cuda: bool, top: int = 15) -> dict[str, Any]:
    """rows: (name, count, self microseconds, is_kernel) per profiler key. On a GPU an op's self
    device time is that of the kernels it launched, and those kernels are rows of their own: so
    the kernels alone make the total (counting ops too would count each kernel twice) and the ops
    only say which kind of work a kernel did. On a CPU there are only ops."""
    timed = [r for r in rows if r[2] > 0]
    items = [r for r in timed if r[3]] if cuda else timed
    if cuda and not items:  # no kernel rows recorded: fall back to the ops' device time
        items = timed
    total = sum(r[2] for r in items) or 1.0
    items.sort(key=lambda r: r[2], reverse=True)
    top_rows = [{"name": name[:100], "ms_per_frame": round(us / 1000.0 / n, 4), "share": round(us / total, 4),
                 "calls_per_frame": round(count / n, 2)} for name, count, us, _ in items[:top]]
    ops = [r for r in timed if not r[3]]
    kinds = dict.fromkeys((k for k, _ in KINDS), 0.0)
    for name, _, us, _ in ops:
        low = name.lower()
        if low.startswith("triton"):  # Inductor's own kernels (named after what they fuse, e.g. fused_convolution)
            continue
        kind = next((k for k, words in KINDS if any(w in low for w in words)), None)
        if kind:
            kinds[kind] += us
    claimed = sum(kinds.values())
    out = {f"{k}_ms": round(v / 1000.0 / n, 4) for k, v in kinds.items()}
    out["other_ms"] = round(max(0.0, total - claimed) / 1000.0 / n, 4)
    out["total_ms"] = round(total / 1000.0 / n, 4)
    return {"top": top_rows, "kinds": out}


def _graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured in a CUDA graph of its own (warmed up on a side stream first): its replay costs
    the stage's GPU time without the per-kernel launch overhead a frame's single graph removes."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    return capture_graph(fn).replay


@torch.no_grad()
def stage_times(engine: Any, n: int = 20) -> dict[str, Any]:
    """Milliseconds per call of each stage of the frame step with the modules the backend runs
    (compiled ones while a compiled backend is open): TAESD encode, the denoising step (UNet
    stream batch + RCFG + LCM update) and TAESD decode, each timed alone over `n` calls after one
    untimed call. On a GPU each stage is captured in a CUDA graph of its own and replayed, timed
    with CUDA events, so the figures are GPU time as the frame's graph spends it (`graphs`: True;
    False if a stage could not be captured and ran kernel by kernel); on a CPU, wall clock.
    The engine's carried state is restored afterwards."""
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
