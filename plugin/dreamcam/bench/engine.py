"""`dreamcam bench`: frame throughput and latency, host uint8 frame in -> host uint8 frame out.

Modes are a small dispatcher (`MODES`): each takes the parsed arguments and returns one
result dict that `run` prints (as JSON with --json). Today:

- "engine": dreamcam's engine through a backend (eager / compiled / tensorrt), optionally
  side by side with the peer, StreamDiffusion 0.1.1 (--peer, see `bench_peer`), on the same
  modules in the same process. With --loop it also times a live loop (a moving test pattern
  made per frame, output dropped) against the engine alone. The compiled backend's speed knobs
  (--fuse-qkv, --inductor, --compile-mode, --compile-scope) are passed to its constructor.

Figures: fps = frames / wall seconds of the timed run (with --frame-buffer F each call takes and
returns F frames, so fps counts F per call); p50/p99 = percentiles of per-call wall milliseconds
(one call is one frame when F = 1); startup_s = seconds from building the engine (or the peer)
to its first frame out, compiling and capturing included; gpu_mem_peak_mib = peak CUDA memory
allocated by torch while that side ran (weights included, shared by both sides).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from dreamcam.backends.options import check_knobs, knob_options
from dreamcam.cli.bench_args import add_arguments, check
from dreamcam.cli.model_load import load_model
from dreamcam.bench.gate import TimingGate
from dreamcam.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- timing


def summarize(ms: list[float], wall_s: float, frames_per_call: int = 1) -> dict[str, float]:
    """Per-call wall milliseconds and the run's wall seconds -> frames, fps (frames per second,
    frames_per_call frames per call), p50/p99/mean ms per call."""
    a = np.asarray(ms, dtype=np.float64)
    n = int(a.size) * frames_per_call
    return {
        "frames": n,
        "frames_per_call": frames_per_call,
        "fps": round(n / wall_s, 2) if wall_s > 0 else float("nan"),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def time_frames(step: Callable[[int], Any], frames: int, warmup: int, frames_per_call: int = 1) -> dict[str, float]:
    """Call step(i) `warmup` times untimed, then frames // frames_per_call times timed (at least
    once; each call is host -> host and handles frames_per_call frames)."""
    for i in range(warmup):
        step(i)
    ms = []
    t_run = time.perf_counter()
    for i in range(max(1, frames // frames_per_call)):
        t0 = time.perf_counter()
        step(i)
        ms.append((time.perf_counter() - t0) * 1e3)
    return summarize(ms, time.perf_counter() - t_run, frames_per_call)


def batched(frames: list[np.ndarray], f: int) -> list[np.ndarray]:
    """Frames as process() takes them: each (H, W, 3) when f == 1, else stacks (f, H, W, 3) of
    consecutive frames (as many stacks as frames, cycling)."""
    if f == 1:
        return frames
    return [np.stack([frames[(i + k) % len(frames)] for k in range(f)]) for i in range(0, f * len(frames), f)]


def input_frames(width: int, height: int, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """n distinct uint8 (H, W, 3) frames: smooth gradients plus noise, like a camera."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for k in range(n):
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200 + 20 * k
        out.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------------------- setup


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags and settle device, dtype, architecture and t_index_list."""
    from dreamcam.backends import check_backend_device, choose_backend
    from dreamcam.engine.stream import check_t_index_list, strength_to_t_index_list

    arch = args.arch or args.model or "tiny"
    if args.model and args.arch and args.arch != args.model:
        raise ConfigError(f"--model {args.model} and --arch {args.arch} disagree; pass one of them")
    if args.arch not in (None, "tiny") and not args.random_weights:
        raise ConfigError(f"--arch {arch} needs --random-weights: no pretrained weights are downloaded for benchmarks")
    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")
    if args.frame_buffer < 1:
        raise ConfigError(f"--frame-buffer must be >= 1 (frames per UNet call), got {args.frame_buffer}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    chosen = choose_backend(args.backend, device)
    check_backend_device(chosen, device, "benchmark")  # said before the slow build and the peer's frames
    check_knobs(args, chosen)
    if args.t_index_list:
        t_index = check_t_index_list(args.t_index_list.split(","), 50)
    else:
        t_index = strength_to_t_index_list(args.strength, args.steps, 50)
    # a real model (hub id, folder, file) loads as `dreamcam run` loads it; tiny and --arch are built here
    model = None if args.arch or arch == "tiny" else arch
    return {"arch": arch, "model": model, "backend": chosen, "device": device, "dtype": dtype, "t_index_list": t_index}


def build_pipeline(arch: str, device: str, dtype: torch.dtype, seed: int = 0):
    if arch == "tiny":
        from dreamcam.models.pipelines import tiny_pipeline

        return tiny_pipeline(seed, device=device, dtype=dtype)
    from dreamcam.models.archs import arch_pipeline

    return arch_pipeline(arch, seed=seed, device=device, dtype=dtype)


def _cuda_sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _mem_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _mem_peak_mib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


# ---------------------------------------------------------------------------- modes


def backend_options(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    """The compiled backend's constructor options from the flags; {} for other backends."""
    from dreamcam.backends import choose_backend

    if choose_backend(args.backend, engine.device.type) != "compiled":
        return {}
    return {"compile": not args.no_compile, "cuda_graph": not args.no_cuda_graph, **knob_options(args)}


def make_engine(pipe, cfg: dict[str, Any], args: argparse.Namespace):
    from dreamcam.engine.stream import StreamEngine

    engine = StreamEngine(pipe, cfg["t_index_list"], args.width, args.height, cfg_type=args.cfg_type,
                          frame_buffer_size=args.frame_buffer, device=cfg["device"], dtype=cfg["dtype"])
    engine.prepare("a photo of a cat", num_inference_steps=50, guidance_scale=args.guidance, seed=args.seed)
    return engine


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    from dreamcam.backends import choose_backend, make_backend

    cfg = resolve(args)
    device = cfg["device"]
    t0 = time.perf_counter()
    if cfg["model"]:
        pipe = load_model(args, torch.device(device), cfg["dtype"], cfg["backend"])
    else:
        pipe = build_pipeline(cfg["arch"], device, cfg["dtype"])
    _cuda_sync(device)
    result: dict[str, Any] = {
        "mode": "engine",
        "arch": cfg["arch"],
        "size": f"{args.width}x{args.height}",
        "t_index_list": cfg["t_index_list"],
        "cfg_type": args.cfg_type,
        "frame_buffer_size": args.frame_buffer,
        "device": device,
        "dtype": str(cfg["dtype"]).replace("torch.", ""),
        "build_s": round(time.perf_counter() - t0, 2),
        "env": environment(device),
    }
    f = args.frame_buffer
    if args.loop and f > 1:
        raise ConfigError(f"--loop runs the live loop, one frame per engine call; drop --frame-buffer {f} or --loop")
    frames = batched(input_frames(args.width, args.height), f)

    gate = TimingGate(args.timing_gate)

    def start(make: Callable[[], Any], process_of: Callable[[Any], Callable]) -> tuple[Any, float]:
        # build (compile, capture) and the first frame out: not timed against other rows, so not gated
        _mem_reset(device)
        t_start = time.perf_counter()
        obj = make()
        process_of(obj)(frames[0])
        return obj, round(time.perf_counter() - t_start, 2)

    def timed(process: Callable, startup_s: float) -> dict[str, Any]:
        stats = time_frames(lambda i: process(frames[i % len(frames)]), args.frames, args.warmup, f)
        stats.update(startup_s=startup_s, gpu_mem_peak_mib=_mem_peak_mib(device))
        return stats

    if args.peer and choose_backend(args.backend, device) == "eager":
        # the eager backend leaves the shared modules as they are: time both sides frame by
        # frame in alternation, so load from other processes falls on both alike
        from dreamcam.bench.peer import bench_interleaved

        with gate.timing():
            return bench_interleaved(args, cfg, pipe, frames, result)
    # the peer runs first, on modules nothing has touched yet (the compiled backend later
    # converts the shared weights to channels-last, which must not change the peer's figure)
    if args.peer:
        from dreamcam.bench.peer import PeerRunner

        peer, startup_s = start(lambda: PeerRunner(pipe, cfg, args), lambda r: r.process)
        with gate.timing():
            result["peer"] = timed(peer.process, startup_s)

    def make_dreamcam():
        engine = make_engine(pipe, cfg, args)
        return make_backend(args.backend, engine, **backend_options(args, engine))

    backend, startup_s = start(make_dreamcam, lambda b: b.process)
    try:
        with gate.timing():
            result["dreamcam"] = timed(backend.process, startup_s)
            result["backend"] = backend.name
            if hasattr(backend, "knobs"):  # the compiled backend: its knobs, and compile + warm-up seconds
                result["knobs"], result["compile_s"] = backend.knobs, backend.compile_s
            time_extras(args, backend, frames, result, device)
    finally:
        backend.close()
    if args.timing_gate:
        result["gate_wait_s"] = round(gate.waited_s, 2)
    if args.peer:
        result["ratio_fps"] = round(result["dreamcam"]["fps"] / result["peer"]["fps"], 3)
        result["ratio_p50"] = round(result["peer"]["p50_ms"] / result["dreamcam"]["p50_ms"], 3)
    return result


def time_extras(args: argparse.Namespace, backend: Any, frames: list, result: dict[str, Any], device: str) -> None:
    """What --profile and --loop ask for (and the two-deep figure of an overlapping backend), into result.

    Needs result["dreamcam"] (the synchronous figure) already there; the backend stays open.
    """
    if args.profile:
        from dreamcam.bench.profile import profile_frames, stage_times

        prof = profile_frames(backend.process, frames, args.profile, device)
        result["profile"], result["profile_kinds"] = prof["top"], prof["kinds"]
        if getattr(backend, "engine", None) is not None:  # and per stage: which model takes the time
            result["stages"] = stage_times(backend.engine, n=args.profile)
    if args.loop or getattr(backend, "overlaps", False):
        from dreamcam.bench.loop import time_pipelined

        # the engine alone, two deep: frame i+1 submitted before frame i is collected. A failure
        # here is recorded, not fatal: the synchronous figure above stands on its own
        try:
            result["pipelined"] = time_pipelined(backend, frames, args.frames, args.warmup)
        except Exception as e:  # noqa: BLE001 - reported in the result and the log
            log.error("pipelined timing failed: %s: %s", type(e).__name__, e)
            result["pipelined"] = {"error": f"{type(e).__name__}: {e}"}
    if args.loop:
        from dreamcam.bench.loop import bench_live_loop

        # the run path: 1280x720 test pattern thread -> Runner (framing, pipelining) -> null sink
        result["loop"] = bench_live_loop(backend, width=args.width, height=args.height, frames=args.frames,
                                         warmup=args.warmup)
        result["loop_vs_engine"] = round(result["loop"]["fps"] / result["dreamcam"]["fps"], 3)
        if "fps" in result.get("pipelined", {}):  # the engine alone two deep, as the loop runs it
            result["loop_vs_pipelined"] = round(result["loop"]["fps"] / result["pipelined"]["fps"], 3)


def bench_bypass(args: argparse.Namespace) -> dict[str, Any]:
    from dreamcam.bench.loop import bench_bypass as run_bypass

    return run_bypass(seconds=args.seconds)


def bench_osc(args: argparse.Namespace) -> dict[str, Any]:
    from dreamcam.bench.osc import bench_osc as run_osc

    return {"mode": "osc", **run_osc(), "target": "osc_latency_p99_ms < 5; burst frame times within noise"}


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "engine": bench_engine,
    "bypass": bench_bypass,
    "osc": bench_osc,
}


def mode_of(args: argparse.Namespace) -> str:
    """Which mode the flags ask for."""
    if args.bypass and args.osc:
        raise ConfigError("--bypass and --osc are separate benchmarks: pass one of them")
    return "bypass" if args.bypass else "osc" if args.osc else "engine"


def environment(device: str) -> dict[str, Any]:
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def format_text(r: dict[str, Any]) -> str:
    lines = [f"{r['arch']} {r['size']} t_index={r['t_index_list']} on {r['device']} ({r.get('env', {}).get('gpu', 'cpu')})"]
    for key in ("peer", "dreamcam", "loop"):
        if key in r:
            s = r[key]
            label = f"dreamcam[{r['backend']}]" if key == "dreamcam" else key
            lines.append(f"  {label:20s} {s['fps']:9.1f} fps  p50 {s['p50_ms']:8.2f} ms  p99 {s['p99_ms']:8.2f} ms"
                         + (f"  start {s['startup_s']} s" if "startup_s" in s else ""))
    if "ratio_fps" in r:
        lines.append(f"  dreamcam / peer: {r['ratio_fps']}x fps")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the flags ask for; print it; exit status 0."""
    from dreamcam.cli.run_options import check_output_file

    mode = mode_of(args)
    if args.out:  # said now, not after minutes of benchmark
        check_output_file(args.out, "--out")
    result = MODES[mode](args)
    text = json.dumps(result, sort_keys=False)
    if args.out:
        try:
            with open(args.out, "w") as fh:
                fh.write(text + "\n")
        except OSError as e:
            raise DeviceError(f"cannot write --out {args.out}: {e.strerror or e}; choose a writable path") from e
    if args.json:
        print(text)
    elif mode == "engine":
        print(format_text(result))
    else:
        print("\n".join(f"{k}: {v}" for k, v in result.items()))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m dreamcam.bench.engine ...` (the same as `dreamcam bench ...`)."""
    from dreamcam.errors import DreamcamError

    parser = argparse.ArgumentParser(prog="dreamcam bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        check(args)
        return run(args)
    except DreamcamError as e:
        print(f"dreamcam bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
