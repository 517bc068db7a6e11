"""What `--profile` and `--loop` add to an engine benchmark, for every way it is timed (alone or
beside the peer)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from dreamcam.bench.loop import bench_live_loop, time_pipelined
from dreamcam.bench.profile import profile_frames, stage_times

log = logging.getLogger(__name__)


def time_extras(args: argparse.Namespace, backend: Any, frames: list, result: dict[str, Any], device: str) -> None:
    """What --profile and --loop ask for (and the two-deep figure of an overlapping backend), into result.

    Needs result["dreamcam"] (the synchronous figure) already there; the backend stays open.
    """
    if args.profile:
        prof = profile_frames(backend.process, frames, args.profile, device)
        result["profile"], result["profile_kinds"] = prof["top"], prof["kinds"]
        if getattr(backend, "engine", None) is not None:  # and per stage: which model takes the time
            result["stages"] = stage_times(backend.engine, n=args.profile)
    if args.loop or getattr(backend, "overlaps", False):
        # the engine alone, two deep: frame i+1 submitted before frame i is collected. A failure
        # here is recorded, not fatal: the synchronous figure above stands on its own
        try:
            result["pipelined"] = time_pipelined(backend, frames, args.frames, args.warmup)
        except Exception as e:  # noqa: BLE001 - reported in the result and the log
            log.error("pipelined timing failed: %s: %s", type(e).__name__, e)
            result["pipelined"] = {"error": f"{type(e).__name__}: {e}"}
    if args.loop:
        # the run path: 1280x720 test pattern thread -> Runner (framing, pipelining) -> null sink
        loop_kw = {"width": args.width, "height": args.height, "frames": args.frames, "warmup": args.warmup}
        result["loop"] = bench_live_loop(backend, **loop_kw)
        if args.flicker_rate > 0:
            # the flicker meter's cost: the loop with and without it, alternated (A B A B) so a
            # load change falls on both; each figure is the better of its two runs
            with_meter = [bench_live_loop(backend, **loop_kw, flicker_rate=args.flicker_rate)]
            without = [result["loop"], bench_live_loop(backend, **loop_kw)]
            with_meter.append(bench_live_loop(backend, **loop_kw, flicker_rate=args.flicker_rate))
            result["loop"] = max(without, key=lambda r: r["fps"])
            result["loop_meter"] = max(with_meter, key=lambda r: r["fps"])
            result["meter_cost"] = round(1.0 - result["loop_meter"]["fps"] / result["loop"]["fps"], 4)
        result["loop_vs_engine"] = round(result["loop"]["fps"] / result["dreamcam"]["fps"], 3)
        if "fps" in result.get("pipelined", {}):  # the engine alone two deep, as the loop runs it
            result["loop_vs_pipelined"] = round(result["loop"]["fps"] / result["pipelined"]["fps"], 3)
