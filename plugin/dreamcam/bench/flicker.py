"""`dreamcam bench --flicker`: flicker, flicker_rel, fps and latency for each setting of a knob.

A clip (`--source file:PATH`, else the test clip of `dreamcam.bench.clips`: a still scene with
camera noise, then a cut) is read into memory, framed to the engine size, and played through the
real live loop (`Runner`, the backend, a `Controller` applying the knob, a null output) in order,
one frame after another, as fast as the engine takes them: every pair of consecutive clip frames
is a pair of consecutive engine frames. A `FlickerMeter` sampling every pair (its thread skips the
pairs it has no time for) measures the output. Each setting of the sweep (`--sweep KNOB=V1,V2`)
runs `--warmup` untimed frames, then `--frames` timed and measured frames from the clip's start
(the clip repeats when shorter; the jump back is a cut, counted and left out).

Figures per setting: flicker (grey levels 0..255) and flicker_rel (times the input's own
warping error) as `dreamcam.runtime.flicker` defines them, fps (frames / wall seconds), latency
p50 / p99 (ms, frame taken -> output handed on), the pairs measured and the cuts left out, and
two that say what steadying cost the picture:

- follow: how closely the output follows its input, the Pearson correlation of the two grey
  pictures (at `THUMB` x `THUMB`), averaged over the measured frames; a steadier setting that
  drifts away from the camera reads lower here;
- cut: at each scene cut of the clip, the frames until the output looks more like the new scene
  than the last frame before the cut (0: the frame of the cut itself shows the new scene; the
  most of the cuts in the run, None without a cut).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from typing import Any

import cv2
import numpy as np
import torch

from dreamcam.backends import make_backend
from dreamcam.bench.clips import ClipSpec, write_clip
from dreamcam.bench.timing import backend_options, build_pipeline, cuda_sync, make_engine, resolve
from dreamcam.cli.bench_args import clip_path, sweep_of
from dreamcam.cli.model_load import load_model
from dreamcam.control.controller import Controller
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame, fit
from dreamcam.knobs import ParamStore
from dreamcam.runtime.flicker import CUT_GREY, FlickerMeter
from dreamcam.runtime.runner import Runner
from dreamcam.runtime.stats import RateMeter
from dreamcam.sinks.base import NullSink


THUMB = 32  # follow and cut compare grey thumbnails this many pixels a side


def thumb(image: np.ndarray) -> np.ndarray:
    """A grey THUMB x THUMB float32 picture of a uint8 RGB frame."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails (0 where either is flat)."""
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


class FollowMeter(FlickerMeter):
    """The flicker meter, also keeping a thumbnail of each output by frame index (on the loop
    thread: about 20 microseconds a frame, in the benchmark only)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.outputs: dict[int, np.ndarray] = {}

    def add(self, image: np.ndarray, output: np.ndarray, index: int) -> None:
        self.outputs[index] = thumb(output)
        super().add(image, output, index)


def follow_and_cut(outputs: dict[int, np.ndarray], inputs: list[np.ndarray]) -> tuple[float | None, int | None]:
    """(follow, cut) of one run (see the module docstring): `outputs` by frame index (the clip's
    frame index % len(inputs)), `inputs` the clip's thumbnails."""
    if not outputs:
        return None, None
    n = len(inputs)
    follow = float(np.mean([likeness(o, inputs[k % n]) for k, o in outputs.items()]))
    # the clip's cuts: frames whose input differs from the one before by more than a cut does
    cut_at = {k for k in range(n) if float(np.abs(inputs[k] - inputs[k - 1]).mean()) > CUT_GREY}
    worst = None
    for k in sorted(outputs):
        if k % n not in cut_at or k - 1 not in outputs:
            continue
        old, new = inputs[(k - 1) % n], inputs[k % n]
        after = [j for j in range(k, k + n) if j in outputs and (j == k or (j % n) not in cut_at)]
        shown = next((j - k for j in after if likeness(outputs[j], new) > likeness(outputs[j], old)), None)
        if shown is None:
            continue  # the run ended before the output showed it: not counted
        worst = shown if worst is None else max(worst, shown)
    return round(follow, 4), worst


class ClipSource:
    """Frames held in memory, served in order, one per `read`, at once: the loop takes every frame
    of the clip, none is dropped, and the engine sets the pace. After the last frame the clip
    starts again. Has what the runner reads of a source (`read`, `fps`, `dropped`)."""

    kind = "clip"

    def __init__(self, frames: list[np.ndarray]) -> None:
        if not frames:
            raise ValueError("a clip source needs at least one frame")
        self.frames = frames
        self.dropped = 0
        self.signal_lost = False
        self._index = 0
        self._rate = RateMeter(window=30)

    def read(self, timeout: float | None = None) -> Frame:
        now = time.perf_counter()
        frame = Frame(self.frames[self._index % len(self.frames)], now, self._index)
        self._index += 1
        self._rate.tick(now)
        return frame

    def rewind(self) -> None:
        self._index = 0

    @property
    def fps(self) -> float:
        return self._rate.rate

    def __enter__(self) -> ClipSource:
        return self

    def __exit__(self, *exc) -> None:
        pass


def read_clip(path: str, width: int, height: int, limit: int, fit_mode: str = "crop") -> tuple[list[np.ndarray], float]:
    """At most `limit` frames of the video at `path`, framed to width x height (uint8 RGB), and its rate."""
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    try:
        while len(frames) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height, fit_mode))
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    if len(frames) < 2:
        raise DeviceError(f"cannot read two frames from {path}; a flicker measurement needs a video "
                          "(convert it: ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p out.mp4)")
    return frames, rate


def bench_flicker(args: argparse.Namespace) -> dict[str, Any]:
    """Mode "flicker" (see the module docstring): one row per setting of the sweep."""
    knob, values = sweep_of(args)
    cfg = resolve(args)
    if args.frame_buffer != 1:
        raise ConfigError(f"--flicker runs the live loop, one frame per engine call; drop --frame-buffer {args.frame_buffer}")
    device = cfg["device"]
    with contextlib.ExitStack() as stack:
        path = clip_path(args.source)
        if path is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dreamcam-clip-"))
            path = os.path.join(folder, "still_then_cut.mp4")
            write_clip(path, ClipSpec(args.width, args.height))
        frames, rate = read_clip(path, args.width, args.height, args.warmup + args.frames)
        if cfg["model"]:
            pipe = load_model(args, torch.device(device), cfg["dtype"], cfg["backend"])
        else:
            pipe = build_pipeline(cfg["arch"], device, cfg["dtype"])
        engine = make_engine(pipe, cfg, args)
        backend = stack.enter_context(make_backend(args.backend, engine, **backend_options(args, engine)))
        store = ParamStore({"prompt": engine.prompt})
        controller = stack.enter_context(Controller(engine, store))
        sink = stack.enter_context(NullSink(args.width, args.height))
        source = ClipSource(frames)
        thumbs = [thumb(f) for f in frames]
        kw = {"width": args.width, "height": args.height, "controller": controller}
        rows = []
        for value in values:
            if knob is not None:
                store.set(knob, value)
            source.rewind()
            if args.warmup:
                Runner(source, backend, [sink], frames=args.warmup, **kw).run()
                cuda_sync(device)
            source.rewind()
            with FollowMeter(args.width, args.height, rate=None) as meter:
                runner = Runner(source, backend, [sink], frames=args.frames, meter=meter, **kw)
                t0 = time.perf_counter()
                summary = runner.run()
                elapsed = time.perf_counter() - t0
            follow, cut = follow_and_cut(meter.outputs, thumbs)
            rows.append({
                "setting": "current" if knob is None else f"{knob}={value:g}",
                "value": value,
                "flicker": summary["flicker"],
                "flicker_rel": summary["flicker_rel"],
                "follow": follow,
                "cut_frames": cut,
                "fps": round(summary["frames"] / elapsed, 2),
                "latency_p50_ms": summary["latency_p50_ms"],
                "latency_p99_ms": summary["latency_p99_ms"],
                "frames": summary["frames"],
                "pairs": summary["frames"] - 1,
                "measured": summary["flicker_samples"],
                "cuts": summary["flicker_cuts"],
                "skipped": summary["flicker_dropped"],
                "failed": summary["flicker_errors"],
                "meter_ms": summary["flicker_ms"],
            })
    return {
        "mode": "flicker",
        "arch": cfg["arch"],
        "size": f"{args.width}x{args.height}",
        "t_index_list": cfg["t_index_list"],
        "device": device,
        "backend": backend.name,
        "clip": args.source or f"test clip ({ClipSpec().still_s:g} s still with noise, cut, {ClipSpec().after_s:g} s)",
        "clip_frames": len(frames),
        "clip_fps": round(rate, 3),
        "knob": knob,
        "rows": rows,
    }


def format_flicker(r: dict[str, Any]) -> str:
    """The rows side by side, one line per setting."""
    lines = [f"flicker of {r['arch']} {r['size']} t_index={r['t_index_list']} on {r['device']} "
             f"[{r['backend']}], clip {r['clip']}: {r['clip_frames']} frames",
             f"  {'setting':20s} {'flicker':>8s} {'rel':>6s} {'follow':>7s} {'cut':>4s} {'fps':>8s} {'lat p50':>8s} "
             f"{'lat p99':>8s}  pairs measured / cuts"]
    for row in r["rows"]:
        flick = "-" if row["flicker"] is None else f"{row['flicker']:.2f}"
        rel = "-" if row["flicker_rel"] is None else f"{row['flicker_rel']:.2f}"
        follow = "-" if row["follow"] is None else f"{row['follow']:.3f}"
        cut = "-" if row["cut_frames"] is None else str(row["cut_frames"])
        lines.append(f"  {row['setting']:20s} {flick:>8s} {rel:>6s} {follow:>7s} {cut:>4s} {row['fps']:8.1f} "
                     f"{row['latency_p50_ms']:8.1f} {row['latency_p99_ms']:8.1f}  {row['measured']} / {row['cuts']}")
    lines.append("  flicker: warping error of the output, grey levels 0..255; rel: times the input's own (docs/flicker.md)")
    lines.append("  follow: correlation of output and input; cut: frames until a cut's new scene shows (0 = at once)")
    return "\n".join(lines)
