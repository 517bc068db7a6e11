"""`dreamcam bench`: frame throughput and latency, host uint8 frame in -> host uint8 frame out.

Modes are a small dispatcher (`MODES`): each takes the parsed arguments and returns one
result dict that `run` prints (as JSON with --json). Today:

- "flicker" (--flicker): flicker, flicker_rel, fps and latency over a clip for each setting of
  a knob sweep (`dreamcam.bench.flicker`).
- "engine": dreamcam's engine through a backend (eager / compiled / tensorrt), optionally
  side by side with the peer, StreamDiffusion 0.1.1 (--peer, see `dreamcam.bench.peer`), on the same
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

import torch

from dreamcam.backends import choose_backend, make_backend
from dreamcam.bench import loop, osc
from dreamcam.bench.flicker import bench_flicker, format_flicker
from dreamcam.bench.extras import time_extras
from dreamcam.bench.gate import TimingGate
from dreamcam.bench.peer import PeerRunner, bench_interleaved
from dreamcam.bench.timing import (
    backend_options,
    batched,
    build_pipeline,
    cuda_sync,
    input_frames,
    make_engine,
    mem_peak_mib,
    mem_reset,
    resolve,
    time_frames,
)
from dreamcam.cli.bench_args import add_arguments, check
from dreamcam.cli.model_load import load_model
from dreamcam.cli.run_options import check_output_file
from dreamcam.errors import ConfigError, DeviceError, DreamcamError

log = logging.getLogger(__name__)


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Mode "engine": dreamcam's backend timed alone, or beside the peer (see the module docstring)."""
    cfg = resolve(args)
    device = cfg["device"]
    t0 = time.perf_counter()
    if cfg["model"]:
        pipe = load_model(args, torch.device(device), cfg["dtype"], cfg["backend"])
    else:
        pipe = build_pipeline(cfg["arch"], device, cfg["dtype"])
    cuda_sync(device)
    result: dict[str, Any] = {
        "mode": "engine",
        "arch": cfg["arch"],
        "size": f"{args.width}x{args.height}",
        "t_index_list": cfg["t_index_list"],
        "cfg_type": args.cfg_type,
        "frame_buffer_size": args.frame_buffer,
        "controlnet": [f"{m} ({c}) x{args.control_scale:g}"
                       for m, c in zip(getattr(args, "controlnet", None) or [], getattr(args, "control_specs", []))],
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
        mem_reset(device)
        t_start = time.perf_counter()
        obj = make()
        process_of(obj)(frames[0])
        return obj, round(time.perf_counter() - t_start, 2)

    def timed(process: Callable, startup_s: float) -> dict[str, Any]:
        stats = time_frames(lambda i: process(frames[i % len(frames)]), args.frames, args.warmup, f)
        stats.update(startup_s=startup_s, gpu_mem_peak_mib=mem_peak_mib(device))
        return stats

    if args.peer and choose_backend(args.backend, device) == "eager":
        # the eager backend leaves the shared modules as they are: time both sides frame by
        # frame in alternation, so load from other processes falls on both alike
        with gate.timing():
            return bench_interleaved(args, cfg, pipe, frames, result)
    # the peer runs first, on modules nothing has touched yet (the compiled backend later
    # converts the shared weights to channels-last, which must not change the peer's figure)
    if args.peer:
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


def bench_bypass(args: argparse.Namespace) -> dict[str, Any]:
    return loop.bench_bypass(seconds=args.seconds)


def bench_osc(args: argparse.Namespace) -> dict[str, Any]:
    return {"mode": "osc", **osc.bench_osc(), "target": "osc_latency_p99_ms < 5; burst frame times within noise"}


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "engine": bench_engine,
    "bypass": bench_bypass,
    "osc": bench_osc,
    "flicker": bench_flicker,
}


def mode_of(args: argparse.Namespace) -> str:
    """Which mode the flags ask for."""
    chosen = [flag for flag in ("bypass", "osc", "flicker") if getattr(args, flag)]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join('--' + f for f in chosen)} are separate benchmarks: pass one of them")
    return chosen[0] if chosen else "engine"


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
    if r.get("controlnet"):
        lines.append(f"  ControlNet: {', '.join(r['controlnet'])}")
    for key in ("peer", "dreamcam", "loop", "loop_meter"):
        if key in r:
            s = r[key]
            label = f"dreamcam[{r['backend']}]" if key == "dreamcam" else key
            lines.append(f"  {label:20s} {s['fps']:9.1f} fps  p50 {s['p50_ms']:8.2f} ms  p99 {s['p99_ms']:8.2f} ms"
                         + (f"  start {s['startup_s']} s" if "startup_s" in s else ""))
    if "ratio_fps" in r:
        lines.append(f"  dreamcam / peer: {r['ratio_fps']}x fps")
    if "meter_cost" in r:
        lines.append(f"  flicker meter: loop {100 * r['meter_cost']:+.1f}% slower with it")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the flags ask for; print it; exit status 0."""
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
    elif mode == "flicker":
        print(format_flicker(result))
    else:
        print("\n".join(f"{k}: {v}" for k, v in result.items()))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m dreamcam.bench.engine ...` (the same as `dreamcam bench ...`)."""
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
